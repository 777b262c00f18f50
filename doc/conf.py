"""
Sphinx configuration for the twistedq documentation.

Build from the repository root::

    .venv/bin/sphinx-build -W --keep-going -b html doc doc/_build/html
"""

import importlib
import inspect
import os
import sys

from sphinx.util.docutils import SphinxDirective

# Import the package from this checkout (the folder above doc/), not from
# whatever copy happens to be installed.
sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..")))

# twistedq.contrib.django.models can only be imported once Django is set
# up: configure the least that lets it import.  No database is opened.
import django
from django.conf import settings as django_settings

import twistedq

if not django_settings.configured:
    django_settings.configure(
        INSTALLED_APPS=[
            "django.contrib.contenttypes",
            "django.contrib.auth",
            "twistedq.contrib.django",
        ],
        DATABASES={},
        USE_TZ=True,
    )
    django.setup()

project = "twistedq"
author = "the twistedq authors"
copyright = "the twistedq authors"
version = twistedq.__version__
release = twistedq.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.viewcode",
]

root_doc = "index"
exclude_patterns = ["_build"]

# autodoc: document what has a docstring, in source order.  Nothing is
# mocked: the package and its dependencies are installed.
#
# Undocumented members stay out by leaving "undoc-members" unset: autodoc
# treats any value of a flag option here as "on", so "undoc-members": False
# would turn them *on* (Sphinx 9 converts the value with bool_option(),
# which always returns True).
autodoc_default_options = {
    "members": True,
}
autodoc_member_order = "bysource"
# Show only the package's own docstrings, not those inherited from Twisted
# and txAMQP (written in epytext, which Sphinx does not read).
autodoc_inherit_docstrings = False

nitpicky = False

html_theme = "alabaster"
html_theme_options = {
    "description": "A distributed task queue built on Twisted",
    "fixed_sidebar": True,
}
html_sidebars = {
    "**": ["about.html", "navigation.html", "searchbox.html"],
}


def _indented(text, spaces):
    return [(" " * spaces + line).rstrip() for line in inspect.cleandoc(text or "").splitlines()]


class ZopeInterface(SphinxDirective):
    """
    ``.. zope-interface:: package.module.IName`` documents a zope.interface
    interface with its attributes and methods, from its docstrings.
    autodoc cannot: an interface is not a class.
    """

    required_arguments = 1

    def run(self):
        module_name, _, name = self.arguments[0].rpartition(".")
        interface = getattr(importlib.import_module(module_name), name)
        lines = [f".. py:class:: {name}", f"   :module: {module_name}", ""]
        lines += _indented(interface.getDoc(), 3)
        for member in interface.names():
            description = interface[member]
            if hasattr(description, "getSignatureString"):
                lines += ["", f"   .. py:method:: {member}{description.getSignatureString()}"]
            else:
                lines += ["", f"   .. py:attribute:: {member}"]
            lines += ["", *_indented(description.getDoc(), 6)]
        return self.parse_text_to_nodes("\n".join(lines))


def setup(app):
    app.add_directive("zope-interface", ZopeInterface)
