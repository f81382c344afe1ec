"""Using a trained model on your own videos (infer.py): inference_model.py (the model on its device and
precision, with its identity), embedding_store.py (the crash-safe, resumable store), indexing.py (writing a store),
prompt_visualization.py."""
