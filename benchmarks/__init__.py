"""Benchmarks (not tests): `python -m benchmarks.run` prints markdown tables for BUILD_NOTES.md."""
