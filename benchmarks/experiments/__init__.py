"""One-off experiments behind figures in docs/results.md; not part of `make bench` (README.md here)."""
