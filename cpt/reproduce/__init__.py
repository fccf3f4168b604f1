"""The papers' small-scale twins end to end: run the grids, judge the claims from seeded
intervals, regenerate `docs/REPRODUCTION.md`; and the sweep demo."""
