"""Benchmarks (run as scripts: `python bench/api.py run`); results in bench/RESULTS.md."""
