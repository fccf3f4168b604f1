"""`python scripts/sweep_demo.py` (`make sweep-demo`): see cpt/reproduce/sweep_demo.py."""

from cpt.reproduce.sweep_demo import main

if __name__ == "__main__":
    main()
