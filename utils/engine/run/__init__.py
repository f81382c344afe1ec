"""A run of main.py and its folder: folder.py (which files make a run, --overwrite, --resume's flag check:
RESUME_FREE_FLAGS), folder_lock.py (one writer per run folder or embedding store), tensorboard_log.py
(--tensorboard), curves.py (training_curves.png), cli.py (the entry points' parser, USER_ERRORS and their
one-line messages)."""
