"""Downstream tasks through lm-evaluation-harness: our model as an lm-eval model (`harness`), the
task index a run or checkpoint uses (`index`), built-in tasks from held-out documents
(`next_line`)."""
