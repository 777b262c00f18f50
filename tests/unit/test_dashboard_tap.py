"""
Tests for the dashboard's options of ``twistd twistedq``
(:py:obj:`twistedq.tap`): the service tree built, never started.
"""

from __future__ import annotations

import os
from typing import Any

from twisted.application.internet import StreamServerEndpointService
from twisted.python.usage import UsageError
from twisted.trial.unittest import SynchronousTestCase

from twistedq import tap
from twistedq.dashboard.resources import DashboardResource


class DashboardOptionsTests(SynchronousTestCase):
    """
    ``--operator-token``, ``$TWISTEDQ_OPERATOR_TOKEN`` and ``--no-dashboard``.
    """

    def setUp(self) -> None:
        saved = os.environ.pop("TWISTEDQ_OPERATOR_TOKEN", None)
        if saved is not None:
            self.addCleanup(os.environ.__setitem__, "TWISTEDQ_OPERATOR_TOKEN", saved)

    def site_root(self, *argv: str) -> Any:
        options = tap.Options()
        options.parseOptions(["--log-format", "twisted", "--status", "tcp:0", *argv])
        daemon = tap.makeService(options)
        (served,) = [c for c in daemon if isinstance(c, StreamServerEndpointService)]
        return served.factory.resource

    def config(self, root: Any) -> Any:
        dashboard = root.children[b"dashboard"]
        self.assertIsInstance(dashboard, DashboardResource)
        return dashboard.children[b"config"].actions

    def test_read_only_by_default(self) -> None:
        """
        The status site serves the dashboard, with no action.
        """
        self.assertIsNone(self.config(self.site_root()))

    def test_token_from_option_or_environment(self) -> None:
        """
        ``--operator-token`` or ``$TWISTEDQ_OPERATOR_TOKEN`` allows the
        actions to that token only.
        """
        actions = self.config(self.site_root("--operator-token", "t0k-of-16-chars!"))
        self.assertTrue(actions.allows(b"t0k-of-16-chars!"))
        self.assertFalse(actions.allows(b"t0k-of-16-chars"))
        self.assertIn("revoke", actions.offered())
        os.environ["TWISTEDQ_OPERATOR_TOKEN"] = "from-the-environment"
        self.addCleanup(os.environ.pop, "TWISTEDQ_OPERATOR_TOKEN", None)
        self.assertTrue(self.config(self.site_root()).allows(b"from-the-environment"))

    def test_short_token_refused(self) -> None:
        """
        A token shorter than 16 characters, from the option or the
        environment, is a usage error naming the length wanted.
        """
        error = self.assertRaises(UsageError, self.site_root, "--operator-token", "a")
        self.assertIn("at least 16", str(error))
        os.environ["TWISTEDQ_OPERATOR_TOKEN"] = "short"
        self.addCleanup(os.environ.pop, "TWISTEDQ_OPERATOR_TOKEN", None)
        self.assertRaises(UsageError, self.site_root)

    def test_no_dashboard(self) -> None:
        """
        ``--no-dashboard`` leaves ``/dashboard/`` out.
        """
        self.assertNotIn(b"dashboard", self.site_root("--no-dashboard").children)
