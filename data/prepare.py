"""Turn an official metric-learning archive into this toolkit's lists (`dml prepare`);
the code is dml/data/prepare.py, whose --help says more."""
from dml.data.prepare import main

if __name__ == "__main__":
    main()
