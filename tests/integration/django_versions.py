"""
The Django versions the Django integration tests run on: the virtual
environment's (5.2) and 4.2, the other LTS, installed apart
(``pip install --target .django42 'django>=4.2,<5'``, done by
``scripts/test``) and put first on the ``PYTHONPATH`` of the Django-side
processes (the daemon, ``manage.py``, the test's Django scripts).  A test
class runs on 4.2 by mixing :py:class:`Django42` in first.
"""

from __future__ import annotations

import os
from pathlib import Path

from twisted.trial.unittest import SkipTest

from tests.integration.servers import REQUIRE, ROOT

__all__ = ["Django42", "DjangoVersion", "django42_path"]


def django42_path() -> str:
    """
    Where Django 4.2 is installed apart: ``TWISTEDQ_TEST_DJANGO42``, else
    ``.django42`` in the checkout.

    :raises SkipTest: it is not installed (an error under
        ``TWISTEDQ_REQUIRE_SERVERS=1``, as in ``scripts/test``).
    """
    path = os.environ.get("TWISTEDQ_TEST_DJANGO42") or str(ROOT / ".django42")
    if not (Path(path) / "django").is_dir():
        message = (
            f"Django 4.2 is not installed in {path}: "
            "pip install --target .django42 'django>=4.2,<5' (scripts/test does)"
        )
        if REQUIRE:
            raise RuntimeError(message)
        raise SkipTest(message)
    return path


class DjangoVersion:
    """
    The tests of a class run on the virtual environment's Django (5.2).
    """

    #: The Django the processes load, as ``major.minor``.
    django = "5.2"

    def python_path(self) -> str:
        """
        The ``PYTHONPATH`` of the test's Django processes.
        """
        return str(ROOT)


class Django42(DjangoVersion):
    """
    The tests of a class run on Django 4.2, first on ``PYTHONPATH``.
    """

    django = "4.2"

    def python_path(self) -> str:
        return os.pathsep.join([django42_path(), str(ROOT)])
