"""Downstream tasks through lm-evaluation-harness: our model as an lm-eval model (`harness`)."""
