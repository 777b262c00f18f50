"""
Dead letters with their reasons, signed messages and the
``twistedq-deadletter`` command, with a real daemon, RabbitMQ and Redis.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from twisted.internet import reactor
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase

from tests.integration.servers import ROOT, Daemon, amqp_url, redis_url, unique_queue
from tests.integration.test_daemon import wait_outcome
from twistedq.amqp.deadletters import DETAIL_HEADER, REASON_HEADER, TIME_HEADER
from twistedq.client import AsyncClient
from twistedq.conf import Settings
from twistedq.message import TaskMessage, new_task_id
from twistedq.signing import KEY_ID_HEADER, SIGNATURE_HEADER, SigningKeys

KEYS = "new:second-secret,old:first-secret"


class DeadLetterTestCase(TestCase):
    """
    A queue of its own, daemons on it, and in-process clients.
    """

    timeout = 120

    def setUp(self) -> None:
        self.directory = Path(tempfile.mkdtemp(prefix="twistedq-dead-"))
        self.queue = unique_queue()
        self.backend = redis_url()
        self.client = self.make_client()

    def make_client(self, signing_keys: str = "") -> AsyncClient:
        client = AsyncClient(
            Settings(
                broker_url=amqp_url(),
                result_backend=self.backend,
                queue=self.queue,
                signing_keys=signing_keys,
            ),
            reactor,
        )
        self.addCleanup(client.close)
        return client

    def start_daemon(self, *extra: str, tasks: str = "tests.integration.tasks") -> Daemon:
        daemon = Daemon(
            self.directory, queue=self.queue, result_backend=self.backend, tasks=tasks, extra=extra
        )
        self.addCleanup(daemon.stop)
        daemon.wait_ready()
        return daemon

    async def publish(self, client: AsyncClient, task: str, *args: Any) -> str:
        message = TaskMessage(id=new_task_id(), task=task, args=args)
        await client.publish(message)
        return message.id

    async def publish_raw(self, body: bytes, headers: dict[str, Any] | None = None) -> None:
        """
        Publish a body to the task queue as it is, bypassing the client.
        """
        await self.client.connection.when_connected()
        channel = self.client.publisher._channel
        assert channel is not None
        topology = self.client.publisher.topology
        properties = {"headers": headers} if headers else {}
        await channel.publish(topology.exchange, topology.routing_key, body, properties)

    async def depth(self, queue: str) -> int:
        protocol = await self.client.connection.when_connected()
        channel = await protocol.open_channel()
        declared = await channel.queue_declare(queue=queue, passive=True)
        await channel.channel_close()
        return declared.message_count

    async def wait_depth(self, queue: str, count: int) -> None:
        for _ in range(400):
            if await self.depth(queue) >= count:
                return
            await deferLater(reactor, 0.05, lambda: None)
        self.fail(f"{queue} never held {count} messages")

    async def take_dead_letters(self, count: int) -> dict[bytes, dict[str, Any]]:
        """
        Wait for ``count`` dead letters and take them: body to headers.
        """
        await self.wait_depth(f"{self.queue}.dead", count)
        protocol = await self.client.connection.when_connected()
        channel = await protocol.open_channel()
        letters = {}
        while True:
            got = await channel.basic_get(queue=f"{self.queue}.dead", no_ack=True)
            if got.method.name != "get-ok":
                break
            letters[got.content.body] = got.content.properties.get("headers") or {}
        await channel.channel_close()
        self.assertEqual(len(letters), count, list(letters))
        return letters

    def assertReason(self, headers: dict[str, Any], reason: str, fragment: str) -> None:
        self.assertEqual(headers[REASON_HEADER], reason, headers)
        self.assertIn(fragment, headers[DETAIL_HEADER])
        self.assertIn("T", headers[TIME_HEADER])

    async def assertFailure(self, task_id: str, exc_type: str, fragment: str) -> None:
        outcome = await wait_outcome(self.client, task_id)
        self.assertEqual(outcome.status, "FAILURE")
        self.assertEqual(outcome.exc["type"], exc_type)
        self.assertIn(fragment, outcome.exc["message"])


def body_of(**document: Any) -> bytes:
    return json.dumps(document).encode()


class CorpusTests(DeadLetterTestCase):
    async def test_malformed_corpus(self) -> None:
        """
        Messages published raw that cannot run each land in the dead-letter
        queue with their reason and detail headers; a FAILURE is stored
        under every id that can be read; the task queue is left empty and
        the daemon runs the next valid task.
        """
        daemon = self.start_daemon("--max-message-size", "8KiB")
        wrong_type, no_task, unknown, too_large = (new_task_id() for _ in range(4))
        deep, huge_name = new_task_id(), new_task_id()
        corpus = {
            # depth: the decoder's own recursion limit
            b'{"v":1,"id":"%s","task":"add","args":%s%s}'
            % (deep.encode(), b"[" * 3000, b"]" * 3000): ("malformed", "nested too deeply"),
            # size of numbers: over Python's integer digits, over a float
            b'{"v":1,"id":"%s","task":"add","args":[%s]}' % (new_task_id().encode(), b"9" * 5000): (
                "not-json",
                "Exceeds the limit",
            ),
            b'{"v":1,"id":"%s","task":"add","args":[1e999]}' % new_task_id().encode(): (
                "not-json",
                "out of range",
            ),
            b'{"v":1,"id":"%s","task":"add","args":[NaN]}' % new_task_id().encode(): (
                "not-json",
                "NaN is not a JSON number",
            ),
            # encodings: a byte order mark, UTF-16, overlong and surrogate UTF-8
            b"\xef\xbb\xbf" + body_of(v=1, id=new_task_id(), task="add"): ("not-json", "BOM"),
            json.dumps({"v": 1, "id": new_task_id(), "task": "add"}).encode("utf-16"): (
                "not-json",
                "not UTF-8",
            ),
            b'{"v":1,"id":"%s","task":"\xc0\xafadd"}' % new_task_id().encode(): (
                "not-json",
                "not UTF-8",
            ),
            b'{"v":1,"id":"%s","task":"\xed\xa0\x80"}' % new_task_id().encode(): (
                "not-json",
                "not UTF-8",
            ),
            # types and shapes
            b"": ("not-json", "Expecting value"),
            b"null": ("malformed", "not a JSON object"),
            b'"a string"': ("malformed", "not a JSON object"),
            body_of(v=True, id=new_task_id(), task="add"): ("malformed", "version True"),
            body_of(v=1, id=new_task_id().upper(), task="add"): ("malformed", "is not a UUID"),
            body_of(v=1, id=new_task_id(), task="add") + b" trailing": ("not-json", "Extra data"),
            body_of(v=1, id=new_task_id(), task="add", kwargs=[1]): (
                "malformed",
                "kwargs is not a JSON object",
            ),
            body_of(v=1, id=new_task_id(), task="add", retries=-1): (
                "malformed",
                "retries is not a non-negative integer",
            ),
            body_of(v=1, id=new_task_id(), task="add", eta=5): ("malformed", "eta is not a string"),
            body_of(v=1, id=new_task_id(), task="add", eta="2020-13-45"): (
                "malformed",
                "is not an ISO 8601 time",
            ),
            body_of(v=1, id=huge_name, task="a" * 3000): ("malformed", "task name 'aaa"),
            body_of(v=1, id=new_task_id(), task="add\u0000"): ("malformed", "task name"),
            body_of(v=1, id=new_task_id(), task="\ud800"): ("malformed", "task name"),
            b"\xff\xfe not json": ("not-json", "not UTF-8"),
            b"{not json": ("not-json", "not JSON"),
            b"[1, 2, 3]": ("malformed", "not a JSON object"),
            body_of(v=1, task="add", args=[1, 2]): ("malformed", "is not a UUID"),
            body_of(v=1, id=wrong_type, task="add", args={"x": 1}): (
                "malformed",
                "args is not a JSON array",
            ),
            body_of(v=1, id=no_task): ("malformed", "task name None"),
            body_of(v=2, id=new_task_id(), task="add"): ("malformed", "version 2"),
            TaskMessage(id=unknown, task="no-such-task").encode(): (
                "unknown-task",
                "no-such-task",
            ),
            TaskMessage(id=too_large, task="echo", args=("x" * 9000,)).encode(): (
                "too-large",
                "over the limit of 8192",
            ),
        }
        for body in corpus:
            await self.publish_raw(body)
        task_id = await self.publish(self.client, "add", 1, 2)
        outcome = await wait_outcome(self.client, task_id)
        self.assertEqual((outcome.status, outcome.result), ("SUCCESS", 3))

        letters = await self.take_dead_letters(len(corpus))
        self.assertEqual(set(letters), set(corpus))
        for body, (reason, fragment) in corpus.items():
            self.assertReason(letters[body], reason, fragment)
        await self.assertFailure(wrong_type, "MessageError", "args is not a JSON array")
        await self.assertFailure(no_task, "MessageError", "task name None")
        await self.assertFailure(unknown, "NotRegistered", "no-such-task")
        await self.assertFailure(too_large, "MessageError", "over the limit")
        await self.assertFailure(deep, "MessageError", "nested too deeply")
        await self.assertFailure(huge_name, "MessageError", "task name")
        self.assertEqual(await self.depth(self.queue), 0)
        log = daemon.log()
        self.assertEqual(log.count("Dead-lettered a message ("), len(corpus))
        self.assertNotIn("a" * 400, log)  # odd values are cut short in the log
        self.assertNotIn("Traceback", log)


class SigningTests(DeadLetterTestCase):
    async def test_signed_corpus_and_key_rotation(self) -> None:
        """
        With keys ``new`` (signing) and ``old``: tasks signed by either run;
        unsigned, altered, unknown-key and malformed-but-signed messages
        are dead-lettered with their reasons (no FAILURE is stored under an
        id an unsigned message claims); the daemon runs the next task.
        """
        self.start_daemon("--signing-keys", KEYS)
        signer = self.make_client(KEYS)
        old_signer = self.make_client("old:first-secret")
        new_id = await self.publish(signer, "add", 2, 3)
        old_id = await self.publish(old_signer, "add", 3, 4)
        for task_id, value in ((new_id, 5), (old_id, 7)):
            outcome = await wait_outcome(self.client, task_id)
            self.assertEqual((outcome.status, outcome.result), ("SUCCESS", value))

        keys = SigningKeys.parse(KEYS)
        unsigned_id = new_task_id()
        unsigned = TaskMessage(id=unsigned_id, task="add", args=(1, 1)).encode()
        original = TaskMessage(id=new_task_id(), task="add", args=(1, 1)).encode()
        altered = original.replace(b"[1,1]", b"[1,2]")
        retired = TaskMessage(id=new_task_id(), task="add", args=(2, 2)).encode()
        malformed = b"[1, 2, 3]"
        await self.publish_raw(unsigned)
        await self.publish_raw(altered, keys.sign(original))
        await self.publish_raw(retired, SigningKeys.parse("retired:zero-secret").sign(retired))
        await self.publish_raw(malformed, keys.sign(malformed))
        last_id = await self.publish(signer, "add", 20, 22)
        outcome = await wait_outcome(self.client, last_id)
        self.assertEqual((outcome.status, outcome.result), ("SUCCESS", 42))

        letters = await self.take_dead_letters(4)
        self.assertReason(letters[unsigned], "unsigned", SIGNATURE_HEADER)
        self.assertReason(letters[altered], "bad-signature", "does not match")
        self.assertReason(letters[retired], "bad-signature", "unknown key 'retired'")
        self.assertReason(letters[malformed], "malformed", "not a JSON object")
        self.assertEqual(letters[altered][KEY_ID_HEADER], "new")
        (stored,) = await self.client.get_outcomes([unsigned_id])
        self.assertEqual(stored.status, "PENDING")


def deadletter(queue: str, *argv: str) -> tuple[str, str]:
    """
    Run ``python -m twistedq.deadletter`` against the test broker; return
    its output and error text.
    """
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    )
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "twistedq.deadletter",
            "--broker",
            amqp_url(),
            "--queue",
            queue,
            *argv,
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    if done.returncode != 0:
        raise AssertionError(f"deadletter {argv} exited {done.returncode}: {done.stderr}")
    return done.stdout, done.stderr


class CommandTests(DeadLetterTestCase):
    async def test_list_show_republish_purge(self) -> None:
        """
        A daemon without the ``echo`` task dead-letters it (and a body that
        is not JSON).  ``list`` shows both, twice alike; ``show`` prints the
        headers and the body; after a daemon with ``echo`` starts,
        ``republish`` sends it back and it runs; ``purge`` empties the
        dead-letter queue.
        """
        daemon = self.start_daemon(tasks="tests.integration.pool_tasks")
        echo_id = await self.publish(self.client, "echo", "hello")
        await self.publish_raw(b"garbage")
        await self.wait_depth(f"{self.queue}.dead", 2)

        first, summary = deadletter(self.queue, "list")
        second, _ = deadletter(self.queue, "list")
        self.assertEqual(first, second)
        self.assertIn("2 dead letters", summary)
        lines = [line.split("\t") for line in first.splitlines()]
        self.assertEqual([line[0] for line in lines], ["1", "2"])
        by_reason = {line[3]: line for line in lines}
        self.assertEqual(set(by_reason), {"unknown-task", "not-json"})
        self.assertEqual(by_reason["unknown-task"][1:3], [echo_id, "echo"])
        self.assertEqual(by_reason["not-json"][1:3], ["-", "-"])
        self.assertEqual(len(by_reason["not-json"]), 6)

        shown, _ = deadletter(self.queue, "show", echo_id)
        self.assertIn('"x-twistedq-reason": "unknown-task"', shown)
        self.assertIn('"hello"', shown)
        self.assertIn("body (", shown)
        await self.assertFailure(echo_id, "NotRegistered", "echo")

        daemon.stop()
        self.start_daemon()
        out, _ = deadletter(self.queue, "republish", echo_id)
        self.assertEqual(out.split("\t")[:2], ["republished", echo_id])
        for _ in range(400):
            (outcome,) = await self.client.get_outcomes([echo_id])
            if outcome.status == "SUCCESS":
                break
            await deferLater(reactor, 0.05, lambda: None)
        self.assertEqual((outcome.status, outcome.result), ("SUCCESS", "hello"))

        remaining, _ = deadletter(self.queue, "list")
        self.assertEqual([line.split("\t")[3] for line in remaining.splitlines()], ["not-json"])
        _, purged = deadletter(self.queue, "purge")
        self.assertIn("1 dead letters purged", purged)
        self.assertEqual(await self.depth(f"{self.queue}.dead"), 0)

    async def test_deep_letter_and_republish_all_while_consumed(self) -> None:
        """
        A letter nested too deeply for the JSON decoder is listed and shown
        (its raw body) like any other; ``republish --all`` with a daemon
        consuming sends each letter there at the start once, even those
        that fail again at once and come back behind them.
        """
        self.start_daemon()
        deep = b'{"v":1,"id":"%s","task":"add","args":%s%s}' % (
            new_task_id().encode(),
            b"[" * 1500,
            b"]" * 1500,
        )
        await self.publish_raw(deep)
        for _ in range(3):
            await self.publish_raw(body_of(v=1, id=new_task_id(), task="add", args="abc"))
        await self.wait_depth(f"{self.queue}.dead", 4)

        listed, summary = deadletter(self.queue, "list")
        self.assertIn("4 dead letters", summary)
        self.assertEqual(len(listed.splitlines()), 4)
        shown, _ = deadletter(self.queue, "show", "1")
        self.assertIn("nested too deeply", shown)
        self.assertIn("body (", shown)

        out, summary = deadletter(self.queue, "republish", "--all")
        self.assertIn("4 dead letters republished", summary)
        self.assertEqual(len(out.splitlines()), 4)
        await self.wait_depth(f"{self.queue}.dead", 4)  # each failed again, once
