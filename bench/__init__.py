"""Benchmarks of the Stepline engine (standalone scripts, not tests): see ``bench/README.md``."""
