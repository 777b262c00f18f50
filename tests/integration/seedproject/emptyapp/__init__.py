"""
An app without a tasks module: autodiscovery skips it.
"""
