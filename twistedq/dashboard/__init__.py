"""
The live dashboard: the state of the cluster made from the events exchange
(:py:mod:`~twistedq.dashboard.state`), kept up to date while a page watches
(:py:mod:`~twistedq.dashboard.watch`), served by the daemon's status site
(:py:mod:`~twistedq.dashboard.resources`) and by the Django app.
"""
