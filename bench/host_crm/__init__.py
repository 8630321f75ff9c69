"""A generated host CRM of 100 models for bench/bench_migrate.py: not part of the package."""
