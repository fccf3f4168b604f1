"""Building a run before fit: the typed config and every object that needs no data (`build`),
the batch geometry, the starting model, and the plan of what a run will cost."""
