"""Benchmarks of bulk_issuer: pacing, baselines, overhead and reading (`python -m benchmarks`).

Each module has `run(quick) -> Report`; `__main__` runs them in sequence, prints one
Markdown table per benchmark and writes `benchmarks/results/<name>.json`.
"""
