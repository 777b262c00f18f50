SECRET_KEY = "twistedq-tests"
INSTALLED_APPS = [
    "tests.integration.seedproject.seedapp",
    "tests.integration.seedproject.emptyapp",
]
DATABASES: dict = {}
USE_TZ = True
