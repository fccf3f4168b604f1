"""Data: sources -> tokenized shards -> fixed windows -> an exact mixture (replay) -> the
datamodule. Knows nothing of models, checkpoints or callbacks."""
