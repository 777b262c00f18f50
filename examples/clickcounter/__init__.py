"""
The click counter of the celery 0.2.0 README, as a Django project using
twistedq.
"""
