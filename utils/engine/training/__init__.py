"""The training loop of every task: trainer.py (Trainer: the DDP-wrapped step of the task, accumulation,
precision, clipping, checkpoints, resume; TrainConfig; TrainingError), checkpoint.py (the resumable training
state: RNG, atomic writes), data_order.py (the resumable data order), optimization.py (AdamW, warm-up cosine),
gradient_cache.py (--micro_batch_size for a step that splits into features and loss)."""
