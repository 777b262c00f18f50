"""
The test servers' variable of Tokyo Tyrant is a tool's, not a setting.
"""

from __future__ import annotations

import warnings

from twisted.trial.unittest import SynchronousTestCase

from twistedq.setting_names import (
    DJANGO_SETTINGS,
    ENVIRONMENT_SETTINGS,
    UnknownSettingWarning,
    warn_unknown_settings,
)


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


class OperatorTokenNameTests(SynchronousTestCase):
    def test_environment_only(self) -> None:
        """
        ``TWISTEDQ_OPERATOR_TOKEN`` is known in the environment (the
        daemon's dashboard reads it there) and unknown as a Django setting
        (Django's dashboard goes by the staff user's permissions).
        """
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            warn_unknown_settings(["TWISTEDQ_OPERATOR_TOKEN"], "environment")
        self.assertEqual([w for w in caught if w.category is UnknownSettingWarning], [])
        self.assertIn("TWISTEDQ_OPERATOR_TOKEN", ENVIRONMENT_SETTINGS)
        self.assertNotIn("TWISTEDQ_OPERATOR_TOKEN", DJANGO_SETTINGS)
