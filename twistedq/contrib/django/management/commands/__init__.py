"""
``manage.py twistedq``.
"""
