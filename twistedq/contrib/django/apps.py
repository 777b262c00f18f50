from django.apps import AppConfig


class TwistedqConfig(AppConfig):
    """
    The twistedq Django app.
    """

    name = "twistedq.contrib.django"
    label = "twistedq"
    verbose_name = "twistedq tasks"
    default_auto_field = "django.db.models.BigAutoField"
