"""
The seed README's ``increment_click``, found by ``tasks.autodiscover()``.
"""

from django.db.models import F

from examples.clickcounter.clicks.models import ClickCount
from twistedq.log import setup_logger
from twistedq.task import tasks


def increment_click(for_url, **kwargs):
    logger = setup_logger(**kwargs)
    clicks_for_url, _ = ClickCount.objects.get_or_create(url=for_url)
    ClickCount.objects.filter(pk=clicks_for_url.pk).update(clicks=F("clicks") + 1)
    clicks_for_url.refresh_from_db()
    logger.info("Incremented click count for %s (now at %d)" % (for_url, clicks_for_url.clicks))
    return clicks_for_url.clicks


tasks.register(increment_click, "increment_click")
