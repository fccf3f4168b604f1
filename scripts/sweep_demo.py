"""`python scripts/sweep_demo.py` (`make sweep-demo`): see cpt/analysis/sweep_demo.py."""

from cpt.analysis.sweep_demo import main

if __name__ == "__main__":
    main()
