"""
The tasks of the Tokyo Tyrant end-to-end test: those of
:py:mod:`tests.integration.tasks` and the one-second periodic beat of
:py:mod:`tests.integration.periodic_tasks`, in one daemon.
"""

import tests.integration.periodic_tasks
import tests.integration.tasks  # noqa: F401
