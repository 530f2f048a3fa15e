"""Helpers the tests and the benchmarks share (one copy of each)."""
