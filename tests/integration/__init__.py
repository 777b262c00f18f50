"""
Integration tests: real RabbitMQ, Redis and daemon processes.

The servers' addresses come from environment variables set by
``scripts/services env`` (``TWISTEDQ_TEST_AMQP_URL``,
``TWISTEDQ_TEST_REDIS_URL``, ...), so they can point at existing servers.
"""
