"""
The twistedq Django app's management commands.
"""
