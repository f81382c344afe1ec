"""Text-video retrieval (--task retrieval): step.py (ContrastiveStep: the model's forward and the contrastive
loss of the global batch), evaluation.py (sharded encoding of captions and videos -> the metrics), metrics.py
(R@1/5/10, MdR, MnR for t2v, v2t, v2t_group), renormalisation.py (dual softmax, QB-Norm), report.py (the rank
histogram and worst queries)."""
