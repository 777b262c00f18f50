"""
What Django's start (the twistedq app's ``ready``) refuses: bad
``TWISTEDQ_*`` environment variables, as the daemon does, and settings
set to None where True or False is wanted.  Each case starts Django in a
child process (its settings are configured once per process).
"""

from __future__ import annotations

import os
import subprocess
import sys

from twisted.trial.unittest import SynchronousTestCase

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

_START = """
import django
from django.conf import settings
settings.configure(
    INSTALLED_APPS=["django.contrib.contenttypes", "twistedq.contrib.django"],
    DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}},
    %s
)
try:
    django.setup()
except Exception as error:
    print(type(error).__name__, error)
else:
    print("started")
"""


def start(environment: dict[str, str] | None = None, settings: str = "") -> str:
    """
    What starting Django prints: ``started`` or the error.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("TWISTEDQ_")}
    env.update(environment or {}, PYTHONPATH=ROOT)
    completed = subprocess.run(
        [sys.executable, "-c", _START % settings],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    return (completed.stdout + completed.stderr).strip().splitlines()[-1]


class EnvironmentCheckedTests(SynchronousTestCase):
    def test_good_environment_starts(self) -> None:
        """
        Good values start.
        """
        self.assertEqual(
            start({"TWISTEDQ_PUBLISH_TIMEOUT": "3", "TWISTEDQ_IGNORE_RESULT": "true"}), "started"
        )

    def test_bad_environment_refused(self) -> None:
        """
        A negative publish timeout or a flag that is none are refused with
        ImproperlyConfigured naming the variable.
        """
        for variable, value in (
            ("TWISTEDQ_PUBLISH_TIMEOUT", "-3"),
            ("TWISTEDQ_IGNORE_RESULT", "maybe"),
        ):
            said = start({variable: value})
            self.assertTrue(said.startswith("ImproperlyConfigured"), said)
            self.assertIn(variable, said)


class NoneSettingsTests(SynchronousTestCase):
    def test_none_is_no_flag(self) -> None:
        """
        ``TWISTEDQ_IGNORE_RESULT = None`` and
        ``TWISTEDQ_TASK_ARGUMENTS_IN_RESULTS = None`` are refused: True or
        False is wanted.
        """
        for setting in ("TWISTEDQ_IGNORE_RESULT", "TWISTEDQ_TASK_ARGUMENTS_IN_RESULTS"):
            said = start(settings=f"{setting}=None,")
            self.assertTrue(said.startswith("ImproperlyConfigured"), said)
            self.assertIn(setting, said)
