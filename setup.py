from setuptools import find_packages, setup

setup(
    name="twistedq",
    version="0.1.0",
    description="A distributed task queue built on Twisted",
    long_description=open("README", encoding="utf-8").read(),
    long_description_content_type="text/x-rst",
    license="BSD-3-Clause",
    # Every twistedq package (a new one is never left out of the wheel), and
    # twisted.plugins by name: it has no __init__.py, on purpose.
    packages=[*find_packages(include=["twistedq", "twistedq.*"]), "twisted.plugins"],
    package_data={
        "twistedq.amqp": ["amqp0-9-1.xml"],
        "twistedq": ["py.typed"],
        "twistedq.dashboard": ["static/*"],
        "twistedq.contrib.django": ["templates/admin/twistedq/*.html"],
    },
    entry_points={
        "console_scripts": [
            "twistedq = twistedq.cli:main",
            "twistedq-deadletter = twistedq.deadletter:main",
        ]
    },
    python_requires=">=3.10",
    install_requires=[
        "Twisted>=24.7,<27",
        "prometheus_client>=0.17,<1",
        "pymemcache>=4,<5",
        "txAMQP>=0.8.2,<0.9",
        "txredisapi>=1.4.10,<2",
        "zope.interface>=5",
    ],
    extras_require={
        "dev": [
            "ruff",
            # mypy-zope follows mypy closely: 1.0.17 is the first for mypy 2.4.
            "mypy>=2.0,<3",
            "mypy-zope>=1.0.17,<2",
            "sphinx>=7",
            "hypothesis",
            "django>=4.2,<7",
            "psycopg[binary]>=3.1,<4",
            "mysqlclient>=2.2,<3",
            "gunicorn>=21,<24",
            # Tests read what the Redis store wrote with redis-py.
            "redis>=4.5,<9",
        ],
        "bench": ["celery[redis]>=5.4,<6", "dramatiq[rabbitmq,redis]>=1.17,<3"],
        "django": ["django>=4.2,<7"],
    },
    classifiers=[
        "Framework :: Twisted",
        "Programming Language :: Python :: 3",
        "Programming Language :: Python :: 3.10",
        "Programming Language :: Python :: 3.11",
        "Programming Language :: Python :: 3.12",
        "Programming Language :: Python :: 3.13",
    ],
)
