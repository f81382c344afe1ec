"""Training and evaluation (main.py), grouped by concern; a group imports only from the groups listed before it
(and from models/, dataloaders/; tests/test_factory.py checks it):
  runtime/      processes and devices, precision, the allocator, determinism, logs, the sharded encoding
  training/     the Trainer (the loop), its resumable state and data order, the optimizer, gradient caching
  run/          a run folder: its rules and lock, TensorBoard, training curves, the entry points' parser
  retrieval/    --task retrieval: the contrastive step, evaluation, R@k metrics, re-normalisation, the report
  recognition/  --task recognition: the cross-entropy step, evaluation, top-k metrics, the report
  tasks/        the Task interface and the TASKS registry that main.py asks (retrieval, recognition, plug-ins)"""
