"""
The daemon's core: the stages one delivery goes through, from the
consumer to a stored outcome and an ack (see :py:mod:`twistedq.daemon.dispatcher`).
"""
