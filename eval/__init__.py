"""Benchmarks and evaluation harness for fewshot (outside the package, like SetFit's experiment scripts)."""
