"""threadline benchmarks: ``python -m bench`` runs every measure against the project's fakes on loopback.

Benchmarks are not tests: nothing here is collected by pytest, and CI does not run them.
"""
