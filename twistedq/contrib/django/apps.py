from django.apps import AppConfig


class TwistedqConfig(AppConfig):
    """
    The twistedq Django app.  When Django starts (``runserver``, gunicorn,
    any ``manage.py`` command) it checks the project's ``TWISTEDQ_*``
    settings: a wrong value is an ``ImproperlyConfigured`` naming the
    setting, rather than an error at the first task published.
    """

    name = "twistedq.contrib.django"
    label = "twistedq"
    verbose_name = "twistedq tasks"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.conf import settings

        from twistedq.contrib.django.conf import settings_from_django

        settings_from_django(settings)
