"""
Tests for :py:mod:`twistedq.routing` and the publishing paths that route.
"""

import os

from twisted.trial.unittest import SynchronousTestCase

from tests.unit.fakes import FakeClient
from twistedq.client import set_default_client
from twistedq.routing import TaskRoutes, route, set_task_routes, task_routes
from twistedq.task import Task, TaskSet, delay_task, publish_task


class Reports(Task):
    name = "reports.daily"

    def run(self):
        return None


class Pinned(Task):
    name = "reports.pinned"
    queue = "pinned"

    def run(self):
        return None


class TaskRoutesTests(SynchronousTestCase):
    def test_exact_then_patterns(self):
        """
        An exact name wins over a pattern; patterns are tried in order;
        an unrouted name has no queue.
        """
        routes = TaskRoutes({"reports.*": "reports", "reports.urgent": "fast", "*.mail": "mail"})
        self.assertEqual(routes.queue_for("reports.urgent"), "fast")
        self.assertEqual(routes.queue_for("reports.daily"), "reports")
        self.assertEqual(routes.queue_for("send.mail"), "mail")
        self.assertIsNone(routes.queue_for("add"))
        self.assertFalse(TaskRoutes())

    def test_parse(self):
        """
        The setting is a dict, a JSON object, or ``name=queue`` pairs.
        """
        for value in (
            {"a": "qa", "b.*": "qb"},
            '{"a": "qa", "b.*": "qb"}',
            " a=qa, b.*=qb ,",
        ):
            routes = TaskRoutes.parse(value)
            self.assertEqual((routes.queue_for("a"), routes.queue_for("b.x")), ("qa", "qb"))

    def test_refused(self):
        for value in ("a", '{"a": 1}', "[1]", "{not json", 5, {"": "q"}, {"a": ""}):
            self.assertRaises(ValueError, TaskRoutes.parse, value)


class RouteTests(SynchronousTestCase):
    def setUp(self):
        set_task_routes({"reports.*": "reports"})
        self.addCleanup(set_task_routes, None)
        self.client = FakeClient()
        set_default_client(self.client)
        self.addCleanup(set_default_client, None)

    def queues(self):
        return [queue for _, queue in self.client.published]

    def test_precedence(self):
        """
        The call's queue, then the class's, then the route; else None
        (the client's queue).
        """
        self.assertEqual(route("reports.x", "given", "class"), "given")
        self.assertEqual(route("reports.x", None, "class"), "class")
        self.assertEqual(route("reports.x"), "reports")
        self.assertIsNone(route("add"))

    def test_publishing_paths_route(self):
        """
        ``delay``, ``apply_async``, ``publish_task``, ``delay_task`` and a
        :py:class:`TaskSet` publish a routed task to its route's queue; a
        class's queue and a call's queue win.
        """
        Reports.delay()
        Reports.apply_async(queue="given")
        Pinned.delay()
        publish_task("reports.weekly")
        delay_task("reports.monthly")
        TaskSet(Reports, [((), {})]).run()
        self.assertEqual(
            self.queues(), ["reports", "given", "pinned", "reports", "reports", "reports"]
        )

    def test_unrouted_default_queue(self):
        """
        A task no route names goes to the client's queue.
        """
        publish_task("add", (1, 2))
        TaskSet("add", [((1, 2), {})]).run()
        self.assertEqual(self.queues(), [None, None])


class SettingTests(SynchronousTestCase):
    def test_environment(self):
        """
        Without routes set in code, ``TWISTEDQ_TASK_ROUTES`` is read (once).
        """
        set_task_routes(None)
        self.addCleanup(set_task_routes, None)
        previous = os.environ.get("TWISTEDQ_TASK_ROUTES")
        os.environ["TWISTEDQ_TASK_ROUTES"] = "mail.*=mail"
        self.addCleanup(
            lambda: (
                os.environ.pop("TWISTEDQ_TASK_ROUTES", None)
                if previous is None
                else os.environ.__setitem__("TWISTEDQ_TASK_ROUTES", previous)
            )
        )
        self.assertEqual(task_routes().queue_for("mail.send"), "mail")


class ClientRoutesTests(SynchronousTestCase):
    def test_client_routes_win(self):
        """
        A client's ``task_routes`` (a dict or TaskRoutes) is used, instead
        of the process's routes, for what is published through it.
        """
        set_task_routes({"reports.*": "reports"})
        self.addCleanup(set_task_routes, None)
        client = FakeClient()
        client.task_routes = {"reports.*": "client-reports"}
        Reports.apply_async(client=client)
        publish_task("reports.weekly", client=client)
        TaskSet(Reports, [((), {})], client=client).run()
        client.task_routes = TaskRoutes({"reports.daily": "daily"})
        Reports.apply_async(client=client)
        self.assertEqual(
            [queue for _, queue in client.published],
            ["client-reports", "client-reports", "client-reports", "daily"],
        )
