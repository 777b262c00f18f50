"""
twistedq: a distributed task queue built on Twisted.
"""

__version__ = "0.1.0"
