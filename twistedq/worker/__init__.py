"""
The daemon's worker side: the dispatcher, the process pool and the child's
entry point.
"""
