"""
AMQP 0-9-1 through txAMQP: the one adapter between twistedq and the broker.
"""
