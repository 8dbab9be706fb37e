"""The benchmark harness (`python -m benchmarks`, docs/benchmarks.md) and its measurement modules."""
