"""`python scripts/reproduce.py PAPER`: a paper's small-scale twin; see cpt/reproduce/twins.py."""

from cpt.reproduce.twins import main

if __name__ == "__main__":
    main()
