"""What runs on top of the models and the data: `utils.engine` (training and evaluation: the trainer, the loss on
the global batch, checkpoints, metrics, processes and precision), `utils.inference` (own-video search: the model
for inference, the embedding store, the prompt figures), `utils.atomic_file` (crash-safe writes, used by both),
and the command-line converter of released checkpoints (`utils/convert_released_checkpoint.py`)."""
