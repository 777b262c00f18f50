"""
The test servers' variable of Tokyo Tyrant is a tool's, not a setting.
"""

from __future__ import annotations

import warnings

from twisted.trial.unittest import SynchronousTestCase

from twistedq.setting_names import UnknownSettingWarning, warn_unknown_settings


class TyrantVariableTests(SynchronousTestCase):
    def test_port_variable_is_silent(self) -> None:
        """
        ``TWISTEDQ_TYRANT_PORT`` (the port scripts/services starts ttserver
        on) draws no unknown-setting warning.
        """
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            warn_unknown_settings(
                ["TWISTEDQ_TYRANT_PORT", "TWISTEDQ_TEST_TYRANT_URL"], "environment"
            )
        self.assertEqual([w for w in caught if w.category is UnknownSettingWarning], [])
