"""Sphinx configuration of the libervia-cache documentation.

Build: ``tox -e docs`` (``sphinx-build -W -b html doc doc/_build/html``).
"""

from __future__ import annotations

import asyncio
import re
import sys
from pathlib import Path

from sphinx.application import Sphinx

# Autodoc imports the daemon's modules; ``libervia_cache.backend.xep_0060`` imports
# ``twisted.internet.reactor``, which would install Twisted's default reactor. The
# daemon runs on the asyncio reactor: install it first, as the daemon does.
if "twisted.internet.reactor" not in sys.modules:
    from twisted.internet import asyncioreactor

    asyncioreactor.install(asyncio.new_event_loop())

project = "libervia-cache"
author = "the libervia-cache authors"
copyright = "the libervia-cache authors, AGPL-3.0-or-later"

try:
    from importlib.metadata import version as _version

    release = _version("libervia-cache")
except Exception:  # building from a checkout that is not installed
    release = "unknown"
version = release

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.viewcode",
]

source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
root_doc = "index"
exclude_patterns = ["_build", ".gitignore"]

# MyST: ``{directive}`` fences, ``:::`` fences, ``%`` comments, heading anchors so that
# pages can link to sections (``[text](configuration.md#pubsub-cache)``).
myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3

autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_default_options = {"members": True, "undoc-members": False}
# Annotations such as ``type[StrEnum]`` make Sphinx look for a ``type`` target, which is
# also the name of dataclass fields (Analyser.type...): an ambiguity, not a broken link.
suppress_warnings = ["ref.python"]

html_theme = "alabaster"
html_title = f"libervia-cache {release}"
html_theme_options = {"description": "Transparent, searchable XMPP pubsub cache"}

_HERE = Path(__file__).parent


def _drop_missing_cli_page(app: Sphinx, docname: str, source: list[str]) -> None:
    """Leave ``cli`` out of the index toctree until ``doc/cli.md`` exists.

    The CLI page is written together with the CLI; a toctree entry naming a missing
    page is a warning, which ``-W`` turns into a failed build.
    """
    if docname == "index" and not (_HERE / "cli.md").exists():
        source[0] = re.sub(r"(?m)^cli\n", "", source[0])


def setup(app: Sphinx) -> None:
    app.connect("source-read", _drop_missing_cli_page)
