"""
Tests for :py:obj:`twistedq.amqp.broker.BrokerAddress`,
:py:obj:`twistedq.amqp.broker.Topology` and :py:obj:`twistedq.conf.Settings`.
"""

from twisted.trial.unittest import SynchronousTestCase

from twistedq.amqp.broker import BrokerAddress, BrokerURLError, Topology
from twistedq.conf import DEFAULT_BROKER_URL, DEFAULT_RESULT_BACKEND, Settings


class FromURLTests(SynchronousTestCase):
    """
    ``BrokerAddress.from_url`` parses amqp URLs.
    """

    def test_full_url(self):
        """
        Every part of a full URL is used.
        """
        address = BrokerAddress.from_url(
            "amqp://alice:s3cret@rabbit.example:5673/prod?heartbeat=15&connect_timeout=2.5"
        )
        self.assertEqual(
            address,
            BrokerAddress(
                host="rabbit.example",
                port=5673,
                username="alice",
                password="s3cret",
                vhost="prod",
                heartbeat=15,
                connect_timeout=2.5,
            ),
        )

    def test_defaults(self):
        """
        A URL with only a host takes the defaults: port 5672, guest/guest,
        vhost ``/``, heartbeat 30.
        """
        address = BrokerAddress.from_url("amqp://broker")
        self.assertEqual(address, BrokerAddress(host="broker"))
        self.assertEqual(
            (address.port, address.username, address.password, address.vhost, address.heartbeat),
            (5672, "guest", "guest", "/", 30),
        )
        self.assertEqual(BrokerAddress.from_url("amqp://broker/").vhost, "/")

    def test_default_url(self):
        """
        The default broker URL is the local guest account on ``/``.
        """
        self.assertEqual(BrokerAddress.from_url(DEFAULT_BROKER_URL), BrokerAddress())

    def test_percent_encoding(self):
        """
        The vhost, user name and password are percent-decoded.
        """
        address = BrokerAddress.from_url("amqp://us%40er:p%40ss%2Fw%3Ard@h/my%20vhost")
        self.assertEqual(address.username, "us@er")
        self.assertEqual(address.password, "p@ss/w:rd")
        self.assertEqual(address.vhost, "my vhost")

    def test_slash_vhost(self):
        """
        ``%2F`` is the vhost ``/``; ``%2Fother`` is ``/other``.
        """
        self.assertEqual(BrokerAddress.from_url("amqp://h/%2F").vhost, "/")
        self.assertEqual(BrokerAddress.from_url("amqp://h/%2fother").vhost, "/other")

    def test_heartbeat_query(self):
        """
        ``?heartbeat=0`` turns heartbeats off.
        """
        self.assertEqual(BrokerAddress.from_url("amqp://h/?heartbeat=0").heartbeat, 0)
        self.assertEqual(BrokerAddress.from_url("amqp://h/v?heartbeat=60").heartbeat, 60)

    def test_bad_query(self):
        """
        A non-numeric heartbeat raises :py:obj:`BrokerURLError`.
        """
        error = self.assertRaises(
            BrokerURLError, BrokerAddress.from_url, "amqp://h/?heartbeat=soon"
        )
        self.assertIn("bad query value", str(error))

    def test_bad_scheme(self):
        """
        A scheme other than amqp raises :py:obj:`BrokerURLError` quoting the URL.
        """
        for url in ("http://h/", "amqps://h/", "h:5672", ""):
            error = self.assertRaises(BrokerURLError, BrokerAddress.from_url, url)
            self.assertIn("amqp://", str(error))
            self.assertIsInstance(error, ValueError)

    def test_no_host(self):
        """
        A URL without a host raises :py:obj:`BrokerURLError`.
        """
        for url in ("amqp://", "amqp:///vhost", "amqp://user:pw@:5672/"):
            error = self.assertRaises(BrokerURLError, BrokerAddress.from_url, url)
            self.assertIn("names no host", str(error))

    def test_bad_port(self):
        """
        A non-numeric or out-of-range port raises :py:obj:`BrokerURLError`.
        """
        for url in ("amqp://h:port/", "amqp://h:70000/", "amqp://h:-1/"):
            error = self.assertRaises(BrokerURLError, BrokerAddress.from_url, url)
            self.assertIn("bad port", str(error))

    def test_str_hides_password(self):
        """
        The text form names user, host, port and vhost but not the password.
        """
        text = str(BrokerAddress.from_url("amqp://bob:hunter2@h:1234/v"))
        self.assertEqual(text, "amqp://bob@h:1234/v")


class TopologyTests(SynchronousTestCase):
    """
    The names a :py:obj:`Topology` derives.
    """

    def test_names(self):
        """
        The routing key is the queue name; dead letters go to ``.dead`` names.
        """
        topology = Topology(exchange="ex", queue="work")
        self.assertEqual(
            (topology.routing_key, topology.dead_letter_exchange, topology.dead_letter_queue),
            ("work", "ex.dead", "work.dead"),
        )


class SettingsTests(SynchronousTestCase):
    """
    ``Settings.from_environment``: defaults, then environment, then overrides.
    """

    def test_defaults(self):
        """
        An empty environment gives the defaults.
        """
        self.assertEqual(
            Settings.from_environment({}),
            Settings(DEFAULT_BROKER_URL, DEFAULT_RESULT_BACKEND, "twistedq", "twistedq"),
        )

    def test_environment(self):
        """
        Each ``TWISTEDQ_*`` variable sets its setting; unrelated ones are ignored.
        """
        settings = Settings.from_environment(
            {
                "TWISTEDQ_BROKER_URL": "amqp://b/",
                "TWISTEDQ_RESULT_BACKEND": "redis://r:6379/1",
                "TWISTEDQ_QUEUE": "q",
                "TWISTEDQ_EXCHANGE": "x",
                "BROKER_URL": "amqp://ignored/",
            }
        )
        self.assertEqual(settings, Settings("amqp://b/", "redis://r:6379/1", "q", "x"))

    def test_empty_variable_ignored(self):
        """
        An empty variable leaves the default.
        """
        settings = Settings.from_environment({"TWISTEDQ_QUEUE": ""})
        self.assertEqual(settings.queue, "twistedq")

    def test_overrides(self):
        """
        Overrides beat the environment; ``None`` overrides are ignored.
        """
        settings = Settings.from_environment(
            {"TWISTEDQ_QUEUE": "env-q", "TWISTEDQ_EXCHANGE": "env-x"},
            queue="arg-q",
            exchange=None,
            broker_url=None,
        )
        self.assertEqual(settings.queue, "arg-q")
        self.assertEqual(settings.exchange, "env-x")
        self.assertEqual(settings.broker_url, DEFAULT_BROKER_URL)

    def test_os_environ(self):
        """
        Without an explicit mapping the process environment is read.
        """
        import os

        self.patch(os, "environ", {"TWISTEDQ_QUEUE": "from-os"})
        self.assertEqual(Settings.from_environment().queue, "from-os")
