"""
``python -m twistedq.cli``: the ``twistedq`` command.
"""

from twistedq.cli.main import main

main()
