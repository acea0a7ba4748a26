"""Benchmarks, run from the repository root as modules: `python -m bench.NAME --help`.
Each prints its figures as ratios against a baseline measured in the same run."""
