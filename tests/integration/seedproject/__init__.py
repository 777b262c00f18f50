"""
A tiny Django project whose apps the seed README's autodiscovery finds.
"""
