from twisted.application.service import ServiceMaker

twistedq = ServiceMaker("twistedq", "twistedq.tap", "Run a twistedq task daemon.", "twistedq")
