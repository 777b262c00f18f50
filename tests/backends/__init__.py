"""
The result backend conformance suite: one contract, run against every
store on its real server.
"""
