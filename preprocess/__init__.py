"""Offline video preparation: compression to 3 fps / short side 224, checks, LMDB packing."""
