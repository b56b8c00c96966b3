"""Benchmarks run by ``detection-agent bench``: this project's code against peers, same run."""
