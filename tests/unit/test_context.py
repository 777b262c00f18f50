"""
Tests for :py:mod:`twistedq.context`: the child this process is and its
default client.
"""

import os
import sys

from twisted.trial.unittest import SynchronousTestCase

from twistedq import context


class ContextTests(SynchronousTestCase):
    """
    The process context, with its slots restored after each test.
    """

    def setUp(self):
        self.addCleanup(context.set_current_child, context.current_child())
        self.addCleanup(context.set_default_client, None)
        factory = context._client_factory
        if factory is not None:
            self.addCleanup(context.set_client_factory, factory)

    def test_child_named(self):
        """
        A process is no child until the child's entry point names it.
        """
        self.assertIsNone(context.current_child())
        context.set_current_child("Process-3")
        self.assertEqual(context.current_child(), "Process-3")

    def test_default_client_built_once(self):
        """
        The default client is built by the factory on first use, then kept.
        """
        built = []

        def factory():
            built.append(object())
            return built[-1]

        context.set_default_client(None)
        context.set_client_factory(factory)
        first = context.default_client()
        self.assertIs(context.default_client(), first)
        self.assertEqual(built, [first])

    def test_set_default_client(self):
        """
        A client set is the default until it is cleared, then one is built
        anew.
        """
        chosen = object()
        context.set_client_factory(object)
        context.set_default_client(chosen)
        self.assertIs(context.default_client(), chosen)
        context.set_default_client(None)
        self.assertIsNot(context.default_client(), chosen)

    def _client_module(self, source):
        """
        Make the module context imports for a factory one written here,
        with ``source`` as its text; no factory is registered yet.
        """
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        with open(os.path.join(directory, "registers_a_client.py"), "w") as module:
            module.write(source)
        self.patch(sys, "path", [directory, *sys.path])
        self.addCleanup(sys.modules.pop, "registers_a_client", None)
        self.patch(context, "CLIENT_MODULE", "registers_a_client")
        self.patch(context, "_client_factory", None)
        context.set_default_client(None)

    def test_factory_imported_by_name(self):
        """
        With no factory registered yet (a process that imported only
        :py:mod:`twistedq.result`), the first use imports the module
        :py:data:`~twistedq.context.CLIENT_MODULE` names, which registers
        one, and builds the client with it.
        """
        self._client_module(
            "from twistedq import context\n"
            "context.set_client_factory(lambda: 'built by the client module')\n"
        )
        self.assertEqual(context.default_client(), "built by the client module")
        self.assertIn("registers_a_client", sys.modules)

    def test_no_factory(self):
        """
        When the client module registers no factory there is no default
        client, and the error names the module and says what to do.
        """
        self._client_module("")
        error = self.assertRaises(LookupError, context.default_client)
        self.assertIn("registers_a_client", str(error))
        self.assertIn("pass a client", str(error))

    def test_client_module_provides_the_factory(self):
        """
        Importing :py:mod:`twistedq.client` makes its ``Client`` the factory.
        """
        from twistedq.client import Client

        self.assertIs(context._client_factory, Client)
