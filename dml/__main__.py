"""`python -m dml`: the `dml` command."""
import sys

from dml.console import main

sys.exit(main())
