"""Training and evaluation (main.py): training.py (the loop), evaluation.py + metrics.py (sharded retrieval
metrics), checkpoint.py (resumable training state), data_order.py (the resumable data order), distributed.py
(processes and devices), precision.py (mixed precision), optimization.py (AdamW, schedule), run_log.py;
run_folder.py (what a run folder holds, --overwrite, --resume's flag check), folder_lock.py, cli.py."""
