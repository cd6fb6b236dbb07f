"""Benchmark scripts (``python benchmarks/NAME.py``) and their shared :mod:`benchmarks.harness`."""
