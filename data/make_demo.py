"""Write the synthetic demo data set, data/demo/ by default (`dml make-demo`); the code is
dml/data/demo.py."""
import sys

from dml.data.demo import main

if __name__ == "__main__":
    sys.exit(main())
