"""Reading runs back: collect a sweep (folders or wandb) into tables, aggregate seeds, draw the
figures, build wandb dashboards, sync offline runs, execute the notebooks."""
