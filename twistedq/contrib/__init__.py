"""
Integrations with other frameworks.
"""
