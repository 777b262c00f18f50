"""
Unit tests: no network, no real processes, no sleeps.
"""
