"""Checkpoints on disk: Lightning files read safely and written atomically, and sharded folders
that reshard on load."""
