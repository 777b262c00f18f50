"""
Tests for twistedq's own AMQP 0-9-1 (with RabbitMQ extensions) spec file.
"""

import struct
import xml.etree.ElementTree as ET
from pathlib import Path

from twisted.internet.defer import DeferredQueue
from twisted.trial.unittest import SkipTest, SynchronousTestCase
from txamqp.connection import Frame, Header, Method
from txamqp.content import Content
from txamqp.protocol import AMQChannel, FrameReceiver
from txamqp.spec import load

SPEC_PATH = Path(__file__).resolve().parent.parent / "twistedq" / "amqp" / "amqp0-9-1.xml"

# RabbitMQ's 0-9-1 file as packaged by Debian's amqp-specs.
DEBIAN_SPEC_PATH = Path("/usr/share/amqp/specs/0-9-1-rabbit/amqp0-9-1.stripped.extended.xml")

CLASSES = {
    "connection": 10,
    "channel": 20,
    "exchange": 40,
    "queue": 50,
    "basic": 60,
    "confirm": 85,
    "tx": 90,
}

BASIC_PROPERTIES = [
    ("content-type", "shortstr"),
    ("content-encoding", "shortstr"),
    ("headers", "table"),
    ("delivery-mode", "octet"),
    ("priority", "octet"),
    ("correlation-id", "shortstr"),
    ("reply-to", "shortstr"),
    ("expiration", "shortstr"),
    ("message-id", "shortstr"),
    ("timestamp", "timestamp"),
    ("type", "shortstr"),
    ("user-id", "shortstr"),
    ("app-id", "shortstr"),
    ("cluster-id", "shortstr"),
]

# (class, method): (id, [(field, primitive type)], synchronous, content)
METHODS = {
    ("connection", "open"): (
        40,
        [("virtual-host", "shortstr"), ("reserved-1", "shortstr"), ("reserved-2", "bit")],
        True,
        False,
    ),
    ("connection", "blocked"): (60, [("reason", "shortstr")], False, False),
    ("connection", "unblocked"): (61, [], False, False),
    ("connection", "update-secret"): (
        70,
        [("new-secret", "longstr"), ("reason", "shortstr")],
        True,
        False,
    ),
    ("connection", "update-secret-ok"): (71, [], True, False),
    ("channel", "open"): (10, [("reserved-1", "shortstr")], True, False),
    ("channel", "open-ok"): (11, [("reserved-1", "longstr")], True, False),
    ("exchange", "declare"): (
        10,
        [
            ("reserved-1", "short"),
            ("exchange", "shortstr"),
            ("type", "shortstr"),
            ("passive", "bit"),
            ("durable", "bit"),
            ("auto-delete", "bit"),
            ("internal", "bit"),
            ("nowait", "bit"),
            ("arguments", "table"),
        ],
        True,
        False,
    ),
    ("exchange", "bind"): (
        30,
        [
            ("reserved-1", "short"),
            ("destination", "shortstr"),
            ("source", "shortstr"),
            ("routing-key", "shortstr"),
            ("nowait", "bit"),
            ("arguments", "table"),
        ],
        True,
        False,
    ),
    ("exchange", "bind-ok"): (31, [], True, False),
    ("exchange", "unbind"): (
        40,
        [
            ("reserved-1", "short"),
            ("destination", "shortstr"),
            ("source", "shortstr"),
            ("routing-key", "shortstr"),
            ("nowait", "bit"),
            ("arguments", "table"),
        ],
        True,
        False,
    ),
    ("exchange", "unbind-ok"): (51, [], True, False),
    ("queue", "declare"): (
        10,
        [
            ("reserved-1", "short"),
            ("queue", "shortstr"),
            ("passive", "bit"),
            ("durable", "bit"),
            ("exclusive", "bit"),
            ("auto-delete", "bit"),
            ("nowait", "bit"),
            ("arguments", "table"),
        ],
        True,
        False,
    ),
    ("queue", "declare-ok"): (
        11,
        [("queue", "shortstr"), ("message-count", "long"), ("consumer-count", "long")],
        True,
        False,
    ),
    ("queue", "bind"): (
        20,
        [
            ("reserved-1", "short"),
            ("queue", "shortstr"),
            ("exchange", "shortstr"),
            ("routing-key", "shortstr"),
            ("nowait", "bit"),
            ("arguments", "table"),
        ],
        True,
        False,
    ),
    ("queue", "purge"): (
        30,
        [("reserved-1", "short"), ("queue", "shortstr"), ("nowait", "bit")],
        True,
        False,
    ),
    ("basic", "qos"): (
        10,
        [("prefetch-size", "long"), ("prefetch-count", "short"), ("global", "bit")],
        True,
        False,
    ),
    ("basic", "consume"): (
        20,
        [
            ("reserved-1", "short"),
            ("queue", "shortstr"),
            ("consumer-tag", "shortstr"),
            ("no-local", "bit"),
            ("no-ack", "bit"),
            ("exclusive", "bit"),
            ("nowait", "bit"),
            ("arguments", "table"),
        ],
        True,
        False,
    ),
    ("basic", "cancel"): (
        30,
        [("consumer-tag", "shortstr"), ("nowait", "bit")],
        True,
        False,
    ),
    ("basic", "publish"): (
        40,
        [
            ("reserved-1", "short"),
            ("exchange", "shortstr"),
            ("routing-key", "shortstr"),
            ("mandatory", "bit"),
            ("immediate", "bit"),
        ],
        False,
        True,
    ),
    ("basic", "return"): (
        50,
        [
            ("reply-code", "short"),
            ("reply-text", "shortstr"),
            ("exchange", "shortstr"),
            ("routing-key", "shortstr"),
        ],
        False,
        True,
    ),
    ("basic", "deliver"): (
        60,
        [
            ("consumer-tag", "shortstr"),
            ("delivery-tag", "longlong"),
            ("redelivered", "bit"),
            ("exchange", "shortstr"),
            ("routing-key", "shortstr"),
        ],
        False,
        True,
    ),
    ("basic", "get-ok"): (
        71,
        [
            ("delivery-tag", "longlong"),
            ("redelivered", "bit"),
            ("exchange", "shortstr"),
            ("routing-key", "shortstr"),
            ("message-count", "long"),
        ],
        True,
        True,
    ),
    ("basic", "ack"): (
        80,
        [("delivery-tag", "longlong"), ("multiple", "bit")],
        False,
        False,
    ),
    ("basic", "reject"): (
        90,
        [("delivery-tag", "longlong"), ("requeue", "bit")],
        False,
        False,
    ),
    ("basic", "nack"): (
        120,
        [("delivery-tag", "longlong"), ("multiple", "bit"), ("requeue", "bit")],
        False,
        False,
    ),
    ("confirm", "select"): (10, [("nowait", "bit")], True, False),
    ("confirm", "select-ok"): (11, [], True, False),
    ("tx", "select"): (10, [], True, False),
    ("tx", "commit"): (20, [], True, False),
    ("tx", "rollback"): (30, [], True, False),
}

CONSTANTS = {
    "frame-method": 1,
    "frame-header": 2,
    "frame-body": 3,
    "frame-heartbeat": 8,
    "frame-min-size": 4096,
    "frame-end": 206,
    "reply-success": 200,
    "content-too-large": 311,
    "no-consumers": 313,
    "connection-forced": 320,
    "invalid-path": 402,
    "access-refused": 403,
    "not-found": 404,
    "resource-locked": 405,
    "precondition-failed": 406,
    "frame-error": 501,
    "syntax-error": 502,
    "command-invalid": 503,
    "channel-error": 504,
    "unexpected-frame": 505,
    "resource-error": 506,
    "not-allowed": 530,
    "not-implemented": 540,
    "internal-error": 541,
}

# Methods of our file that the Debian file does not describe.
EXTRA_METHODS = {
    ("connection", "blocked"),
    ("connection", "unblocked"),
    ("connection", "update-secret"),
    ("connection", "update-secret-ok"),
}

# Names that differ between our file and the Debian one on purpose: the
# no-wait bits are called "nowait" for txAMQP, and the 14th basic property,
# "reserved" in 0-9-1, carries RabbitMQ's name.
NAME_ALIASES = {"no-wait": "nowait", "reserved": "cluster-id"}


def loadSpec():
    return load(str(SPEC_PATH))


class FakeClient:
    """
    The one attribute of a txAMQP client that a channel reads when sending
    content: the largest frame size.
    """

    MAX_LENGTH = 131072


def channelFor(spec):
    """
    Make a txAMQP channel over C{spec} whose outgoing frames go to a queue.
    """
    cls = type("TestChannel", (AMQChannel, spec.klass), {})
    return cls(1, DeferredQueue(), FakeClient())


def parseWithElementTree(path):
    """
    Read a spec file with ElementTree into plain data, resolving every field's
    domain to its primitive type.

    @return: C{(constants, classes)}; C{constants} maps a name to
        C{(value, class)}; C{classes} maps a class name to a dict with keys
        C{id}, C{properties} (a list of C{(name, type)}) and C{methods}
        (a dict of name to a dict with keys C{id}, C{fields}, C{synchronous},
        C{content}, C{responses}).
    """
    root = ET.parse(path).getroot()
    domains = {d.get("name"): d.get("type") for d in root.findall("domain")}

    def primitive(field):
        t = field.get("domain") or field.get("type")
        while t in domains and domains[t] != t:
            t = domains[t]
        return t

    def fields(node):
        return [(f.get("name"), primitive(f)) for f in node.findall("field")]

    def flag(node, name):
        return bool(int(node.get(name, "0")))

    constants = {
        c.get("name"): (int(c.get("value")), c.get("class")) for c in root.findall("constant")
    }
    classes = {}
    for c in root.findall("class"):
        classes[c.get("name")] = {
            "id": int(c.get("index")),
            "properties": fields(c),
            "methods": {
                m.get("name"): {
                    "id": int(m.get("index")),
                    "fields": fields(m),
                    "synchronous": flag(m, "synchronous"),
                    "content": flag(m, "content"),
                    "responses": {r.get("name") for r in m.findall("response")},
                }
                for m in c.findall("method")
            },
        }
    return root, constants, classes


def normalized(fields):
    return [(NAME_ALIASES.get(name, name), t) for name, t in fields]


class SpecLoadTests(SynchronousTestCase):
    """
    The packaged spec file loads with txAMQP's loader and describes AMQP
    0-9-1 with RabbitMQ's extensions.
    """

    def setUp(self):
        self.spec = loadSpec()

    def test_version(self):
        """
        The spec is version 0-9 (txAMQP reads major and minor only), and the
        root also states revision 1 and port 5672.
        """
        self.assertEqual((self.spec.major, self.spec.minor), (0, 9))
        root = ET.parse(SPEC_PATH).getroot()
        self.assertEqual(root.get("revision"), "1")
        self.assertEqual(root.get("port"), "5672")

    def test_classes(self):
        """
        Exactly the classes connection, channel, exchange, queue, basic,
        confirm and tx are described, with their class ids.
        """
        self.assertEqual({c.name: c.id for c in self.spec.classes}, CLASSES)

    def test_methods(self):
        """
        The listed methods have the expected id, fields in wire order with
        their primitive types, synchronous flag and content flag.
        """
        for (klass, name), (mid, fields, sync, content) in METHODS.items():
            method = self.spec.classes.byname[klass].methods.byname[name]
            self.assertEqual(
                (
                    method.id,
                    [(f.name, f.type) for f in method.fields],
                    method.synchronous,
                    method.content,
                ),
                (mid, fields, sync, content),
                f"{klass}.{name}",
            )

    def test_responses(self):
        """
        Synchronous requests name their replies, so txAMQP waits for them;
        basic.get accepts get-ok or get-empty; the replies are flagged as
        responses and the asynchronous methods that a server sends on its own
        are not.
        """
        classes = self.spec.classes.byname
        get = classes["basic"].methods.byname["get"]
        self.assertEqual([m.name for m in get.responses], ["get-ok", "get-empty"])
        for klass, request, reply in [
            ("connection", "open", "open-ok"),
            ("channel", "open", "open-ok"),
            ("exchange", "bind", "bind-ok"),
            ("queue", "declare", "declare-ok"),
            ("basic", "qos", "qos-ok"),
            ("basic", "consume", "consume-ok"),
            ("basic", "cancel", "cancel-ok"),
            ("basic", "recover", "recover-ok"),
            ("confirm", "select", "select-ok"),
            ("tx", "commit", "commit-ok"),
        ]:
            methods = classes[klass].methods.byname
            self.assertEqual(
                methods[request].responses,
                [methods[reply]],
                f"{klass}.{request}",
            )
            self.assertTrue(methods[reply].response)
        for klass, name in [
            ("basic", "deliver"),
            ("basic", "ack"),
            ("basic", "nack"),
            ("basic", "cancel"),
            ("basic", "return"),
            ("channel", "close"),
            ("connection", "blocked"),
        ]:
            self.assertFalse(
                classes[klass].methods.byname[name].response,
                f"{klass}.{name}",
            )

    def test_basicProperties(self):
        """
        The basic class lists the 14 content properties in property-flag
        order with their primitive types.
        """
        basic = self.spec.classes.byname["basic"]
        self.assertEqual([(f.name, f.type) for f in basic.fields], BASIC_PROPERTIES)

    def test_constants(self):
        """
        The frame types, frame limits, reply-success and every error code
        have their values, error codes marked soft-error or hard-error.
        """
        self.assertEqual({c.name: c.id for c in self.spec.constants}, CONSTANTS)
        for c in self.spec.constants:
            if 300 <= c.id < 600:
                self.assertIn(c.klass, ("soft-error", "hard-error"), c.name)
        byname = self.spec.constants.byname
        self.assertEqual(byname["not-found"].klass, "soft-error")
        self.assertEqual(byname["connection-forced"].klass, "hard-error")

    def test_everyFieldResolvesToAPrimitive(self):
        """
        Every field and property resolves to one of AMQP's primitive types.
        """
        primitives = {
            "bit",
            "octet",
            "short",
            "long",
            "longlong",
            "shortstr",
            "longstr",
            "timestamp",
            "table",
        }
        for klass in self.spec.classes:
            for f in klass.fields:
                self.assertIn(f.type, primitives, f.name)
            for method in klass.methods:
                for f in method.fields:
                    self.assertIn(
                        f.type,
                        primitives,
                        f"{klass.name}.{method.name} {f.name}",
                    )


class GeneratedMethodTests(SynchronousTestCase):
    """
    The Python methods txAMQP generates from the spec take the keyword
    arguments twistedq uses, and a no-wait call does not wait for a reply.
    """

    def setUp(self):
        self.spec = loadSpec()
        self.channel = channelFor(self.spec)

    def sent(self):
        """
        Drain the frames the channel has written.
        """
        frames = []
        while self.channel.outgoing.pending:
            frames.append(self.successResultOf(self.channel.outgoing.get()))
        return frames

    def assertSent(self, klass, name, args):
        frames = self.sent()
        self.assertEqual(len(frames), 1)
        payload = frames[0].payload
        self.assertEqual(
            (payload.method.klass.name, payload.method.name, payload.args),
            (klass, name, args),
        )

    def test_calls(self):
        """
        Calls with keyword arguments build method frames with the defaults
        of the other fields filled in.
        """
        ch = self.channel
        calls = [
            (
                lambda: ch.queue_declare(queue="q", durable=True, arguments={"x-max-priority": 10}),
                "queue",
                "declare",
                (0, "q", False, True, False, False, False, {"x-max-priority": 10}),
            ),
            (
                lambda: ch.basic_consume(queue="q", no_ack=False, consumer_tag="t"),
                "basic",
                "consume",
                (0, "q", "t", False, False, False, False, {}),
            ),
            (lambda: ch.basic_qos(prefetch_count=10), "basic", "qos", (0, 10, False)),
            (lambda: ch.basic_qos(prefetch_count=1, global_=True), "basic", "qos", (0, 1, True)),
            (lambda: ch.confirm_select(), "confirm", "select", (False,)),
            (
                lambda: ch.exchange_declare(exchange="x", type="direct", durable=True),
                "exchange",
                "declare",
                (0, "x", "direct", False, True, False, False, False, {}),
            ),
            (
                lambda: ch.queue_bind(queue="q", exchange="x", routing_key="k"),
                "queue",
                "bind",
                (0, "q", "x", "k", False, {}),
            ),
            (lambda: ch.queue_purge(queue="q"), "queue", "purge", (0, "q", False)),
            (lambda: ch.basic_ack(delivery_tag=5, multiple=True), "basic", "ack", (5, True)),
            (lambda: ch.basic_reject(delivery_tag=1, requeue=False), "basic", "reject", (1, False)),
            (
                lambda: ch.basic_nack(delivery_tag=1, multiple=False, requeue=True),
                "basic",
                "nack",
                (1, False, True),
            ),
            (lambda: ch.tx_select(), "tx", "select", ()),
        ]
        for call, klass, name, args in calls:
            call()
            self.assertSent(klass, name, args)

    def test_publish(self):
        """
        basic_publish sends the method frame, a content header carrying the
        properties, and the body; it does not wait for a reply.
        """
        content = Content(b"payload", properties={"delivery-mode": 2})
        d = self.channel.basic_publish(exchange="x", routing_key="k", content=content)
        self.assertIsNone(self.successResultOf(d))
        method, header, body = self.sent()
        self.assertEqual(method.payload.args, (0, "x", "k", False, False))
        self.assertIsInstance(header.payload, Header)
        self.assertEqual(header.payload.properties, {"delivery-mode": 2})
        self.assertEqual(body.payload.content, b"payload")

    def test_nowaitDoesNotWait(self):
        """
        A method called with nowait=True returns an already fired Deferred;
        without it, the Deferred waits for the reply and fires with it.
        """
        ch = self.channel
        for call in [
            lambda **kw: ch.queue_declare(queue="q", **kw),
            lambda **kw: ch.exchange_declare(exchange="x", type="fanout", **kw),
            lambda **kw: ch.exchange_bind(destination="a", source="b", **kw),
            lambda **kw: ch.basic_consume(queue="q", **kw),
            lambda **kw: ch.basic_cancel(consumer_tag="t", **kw),
            lambda **kw: ch.confirm_select(**kw),
        ]:
            self.assertIsNone(self.successResultOf(call(nowait=True)))
        self.sent()

        d = ch.queue_declare(queue="q")
        self.assertNoResult(d)
        self.sent()
        declare_ok = self.spec.classes.byname["queue"].methods.byname["declare-ok"]
        ch.dispatch(Frame(1, Method(declare_ok, "q", 3, 1)), DeferredQueue())
        reply = self.successResultOf(d)
        self.assertEqual((reply.queue, reply.message_count, reply.consumer_count), ("q", 3, 1))


class WireTests(SynchronousTestCase):
    """
    Frames encoded with the spec have AMQP 0-9-1's wire layout.
    """

    def setUp(self):
        self.spec = loadSpec()
        self.receiver = FrameReceiver(self.spec)
        self.basic = self.spec.classes.byname["basic"]

    def method(self, klass, name):
        return self.spec.classes.byname[klass].methods.byname[name]

    def test_basicAck(self):
        """
        basic.ack packs class 60, method 80, a 64-bit delivery tag and the
        multiple bit, between frame type 1 and frame-end 206.
        """
        frame = Frame(1, Method(self.method("basic", "ack"), 5, True))
        data = self.receiver._pack_frame(frame)
        self.assertEqual(
            data,
            struct.pack(">BHIHHQB", 1, 1, 13, 60, 80, 5, 1) + b"\xce",
        )

    def test_queueDeclareBits(self):
        """
        The consecutive bits of queue.declare share one octet, in field order.
        """
        frame = Frame(
            2,
            Method(
                self.method("queue", "declare"),
                0,
                "q",
                False,
                True,
                False,
                True,
                True,
                {},
            ),
        )
        data = self.receiver._pack_frame(frame)
        payload = (
            struct.pack(">HHH", 50, 10, 0) + b"\x01q" + bytes([0b11010]) + struct.pack(">I", 0)
        )
        self.assertEqual(
            data,
            struct.pack(">BHI", 1, 2, len(payload)) + payload + b"\xce",
        )

    def test_roundTrip(self):
        """
        A deliver method and a content header with every property survive
        packing and unpacking.
        """
        deliver = Frame(1, Method(self.method("basic", "deliver"), "ctag", 2**40, True, "x", "k"))
        unpacked = self.receiver._unpack_frame(self.receiver._pack_frame(deliver))
        self.assertEqual(unpacked.payload.method.name, "deliver")
        self.assertEqual(unpacked.payload.args, ("ctag", 2**40, True, "x", "k"))

        properties = {
            "content-type": "application/json",
            "content-encoding": "utf-8",
            "headers": {"a": 1},
            "delivery-mode": 2,
            "priority": 9,
            "correlation-id": "c",
            "reply-to": "r",
            "expiration": "1000",
            "message-id": "m",
            "timestamp": 1700000000,
            "type": "t",
            "user-id": "guest",
            "app-id": "twistedq",
            "cluster-id": "cl",
        }
        header = Frame(1, Header(self.basic, 0, 7, **properties))
        unpacked = self.receiver._unpack_frame(self.receiver._pack_frame(header))
        self.assertEqual(unpacked.payload.klass, self.basic)
        self.assertEqual(unpacked.payload.size, 7)
        self.assertEqual(unpacked.payload.properties, properties)


class DebianSpecComparisonTests(SynchronousTestCase):
    """
    Our file agrees with RabbitMQ's 0-9-1 spec file as packaged by Debian's
    amqp-specs, read with ElementTree independently of txAMQP.
    """

    def setUp(self):
        if not DEBIAN_SPEC_PATH.exists():
            raise SkipTest(
                f"{DEBIAN_SPEC_PATH} is absent (Debian package amqp-specs not installed)"
            )
        self.theirRoot, self.theirConstants, self.theirClasses = parseWithElementTree(
            DEBIAN_SPEC_PATH
        )
        self.ourRoot, self.ourConstants, self.ourClasses = parseWithElementTree(SPEC_PATH)

    def test_version(self):
        """
        Both files state the same major, minor, revision and port.
        """
        for attribute in ("major", "minor", "revision", "port"):
            self.assertEqual(
                self.ourRoot.get(attribute),
                self.theirRoot.get(attribute),
                attribute,
            )

    def test_constants(self):
        """
        Both files have the same constants with the same values and classes.
        """
        self.assertEqual(self.ourConstants, self.theirConstants)

    def test_classes(self):
        """
        Every class of theirs that we describe has the same id, and we
        describe no class they lack.
        """
        self.assertEqual(set(self.ourClasses), set(CLASSES))
        for name in CLASSES:
            self.assertEqual(self.ourClasses[name]["id"], self.theirClasses[name]["id"], name)

    def test_methods(self):
        """
        Every method of theirs is ours with the same id, the same field names
        (up to the no-wait renaming) in the same order with the same
        primitive types, the same synchronous and content flags, and at
        least their responses. Our only extra methods are the listed RabbitMQ
        extensions.
        """
        for klass in CLASSES:
            ours = self.ourClasses[klass]["methods"]
            theirs = self.theirClasses[klass]["methods"]
            for name, their in theirs.items():
                label = f"{klass}.{name}"
                self.assertIn(name, ours, label)
                our = ours[name]
                self.assertEqual(our["id"], their["id"], label)
                self.assertEqual(normalized(our["fields"]), normalized(their["fields"]), label)
                self.assertEqual(our["synchronous"], their["synchronous"], label)
                self.assertEqual(our["content"], their["content"], label)
                self.assertTrue(their["responses"] <= our["responses"], label)
            extras = {(klass, name) for name in set(ours) - set(theirs)}
            self.assertTrue(extras <= EXTRA_METHODS, extras)

    def test_basicProperties(self):
        """
        The basic content properties are the same, in the same order, with
        the same types (their "reserved" 14th property is our cluster-id).
        """
        self.assertEqual(
            normalized(self.ourClasses["basic"]["properties"]),
            normalized(self.theirClasses["basic"]["properties"]),
        )
