from django.apps import AppConfig


class TwistedqConfig(AppConfig):
    """
    The twistedq Django app.  When Django starts (``runserver``, gunicorn,
    any ``manage.py`` command) it checks the project's ``TWISTEDQ_*``
    settings and environment variables, as the daemon does: a wrong value
    is an ``ImproperlyConfigured`` naming the setting or variable, rather
    than an error at the first task published.
    """

    name = "twistedq.contrib.django"
    label = "twistedq"
    verbose_name = "twistedq tasks"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.core.exceptions import ImproperlyConfigured

        from twistedq.conf import Settings, SettingsError

        try:
            # The Django settings, then the environment over them.
            Settings.from_environment()
        except SettingsError as error:
            raise ImproperlyConfigured(f"twistedq: {error}") from None
