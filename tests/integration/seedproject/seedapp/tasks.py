from twistedq.log import setup_logger
from twistedq.task import tasks


def increment_click(for_url, **kwargs):
    logger = setup_logger(**kwargs)
    logger.info("Incremented click count for %s" % for_url)
    return for_url


tasks.register(increment_click, "increment_click")
