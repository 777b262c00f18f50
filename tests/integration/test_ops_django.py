"""
The Django app's public status views and its admin, tried in a process of
their own (``tests.integration.ops_django_script``) on a SQLite database:
no traceback at the public URL unless ``TWISTEDQ_STATUS_TRACEBACKS``, 404
for an unknown taskset, read-only records read-only and big values cut.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from tests.integration.servers import ROOT

FAILED_ID = "0b0c8a34-9a4b-4d8e-8b59-3f5ad0c1e7a2"
TASKSET_ID = "2b0c8a34-9a4b-4d8e-8b59-3f5ad0c1e7a2"
UNKNOWN_TASKSET_ID = "3b0c8a34-9a4b-4d8e-8b59-3f5ad0c1e7a2"


def script(mode: str, **env: str) -> Any:
    database = os.path.join(tempfile.mkdtemp(prefix="twistedq-ops-django-"), "db.sqlite3")
    environment = {
        k: v for k, v in os.environ.items() if k not in ("DJANGO_SETTINGS_MODULE", "OPS_TRACEBACKS")
    }
    environment.update(env, OPS_DJANGO_DB=database)
    completed = subprocess.run(
        [sys.executable, "-m", "tests.integration.ops_django_script", mode],
        capture_output=True,
        text=True,
        timeout=180,
        env=environment,
        cwd=ROOT,
    )
    if completed.returncode != 0:
        raise AssertionError(f"{mode} failed:\n{completed.stdout}\n{completed.stderr}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


class StatusViewTests(SynchronousTestCase):
    def test_no_traceback_unknown_taskset_404(self) -> None:
        """
        By default the view of ``celery/<id>/status/`` answers a failure's
        exception type and message without its traceback; an unknown
        taskset answers 404 with a JSON body, a known one 200.
        """
        report = script("views")
        self.assertEqual(
            report["failure"],
            {
                "task": {
                    "id": FAILED_ID,
                    "status": "FAILURE",
                    "result": "division by zero",
                    "exc": "ZeroDivisionError",
                }
            },
        )
        self.assertEqual(
            report["unknown_taskset"],
            [
                404,
                "application/json",
                {"error": "unknown taskset", "taskset": {"id": UNKNOWN_TASKSET_ID}},
            ],
        )
        self.assertEqual(
            report["known_taskset"],
            [
                200,
                {
                    "taskset": {
                        "id": TASKSET_ID,
                        "total": 3,
                        "completed": 0,
                        "failed": 0,
                        "ready": False,
                    }
                },
            ],
        )

    def test_tracebacks_setting(self) -> None:
        """
        With ``TWISTEDQ_STATUS_TRACEBACKS = True`` the traceback is there.
        """
        report = script("views", OPS_TRACEBACKS="1")
        self.assertEqual(report["failure"]["task"]["traceback"], "Traceback: /srv/x")


class AdminTests(SynchronousTestCase):
    def test_admin(self) -> None:
        """
        A periodic task added without a name, task and schedule is refused
        by the form (no nameless row); one declared in code is only paused;
        results and tasksets are shown without Add or Save and refuse
        changes; a 5 MB result is cut in its page; the traceback is shown
        in the admin.
        """
        report = script("admin")
        self.assertEqual(report["periodic_add"], [200, 200, 200])
        self.assertEqual(report["periodic_names"], ["ops.every-minute"])
        self.assertTrue(report["periodic_list_offers_add"])
        self.assertEqual(report["periodic_pause"], [302, False])
        for model in ("taskresult", "tasksetresult"):
            self.assertEqual(
                report[model],
                {
                    "code": 200,
                    "save": False,
                    "add_code": 403,
                    "list_offers_add": False,
                    "post_code": 403,
                },
                model,
            )
        self.assertTrue(report["traceback_shown"])
        big = report["big"]
        self.assertEqual(big["code"], 200)
        self.assertGreater(big["stored_bytes"], 5_000_000)
        self.assertLess(big["bytes"], 200_000)
        self.assertTrue(big["says_cut"])
