"""`python scripts/reproduce.py PAPER`: a paper's small-scale twin; see cpt/analysis/reproduce.py."""

from cpt.analysis.reproduce import main

if __name__ == "__main__":
    main()
