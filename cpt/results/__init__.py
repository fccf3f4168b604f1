"""What a run reports and under which names: loggers (CSV, wandb), result columns shared by
`runs.csv` and wandb, and job names made of what a sweep varies."""
