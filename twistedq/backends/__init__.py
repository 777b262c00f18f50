"""
Result backends: where results and failures are stored.
"""
