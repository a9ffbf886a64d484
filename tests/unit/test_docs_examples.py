"""Every code example of the documentation (``doc/**/*.md``) runs here, so none can rot.

Fenced blocks are handled by language:

``pycon``
    Doctests. The blocks of one page run in order with shared globals, like one doctest
    file (``ELLIPSIS`` and ``NORMALIZE_WHITESPACE`` on).
``python``
    Run standalone (``exec`` in a fresh namespace).
``ini``
    Loaded with the daemon's own :func:`~libervia_cache.backend.config.load_config`, next
    to a ``ca.pem`` so that ``tls_ca = ca.pem`` resolves. A block marked
    ``% doc-test: setup.cfg`` is instead an excerpt of the project's ``setup.cfg``: every
    key and value it holds must be there.
``json``
    Parsed with :func:`json.loads`. Marked ``% doc-test: search query``, it is also a
    valid search query; marked ``% doc-test: microblog parse_item of the xml block
    above``, it is exactly what the microblog parser returns for the page's previous
    ``xml`` block.
``xml``
    Parsed with :func:`libervia_cache.plugin.xml.parse_element` (one well-formed element).
``sh``, ``shell``, ``bash``, ``console``
    Command lines (in ``console``, those after ``$``). ``libervia-cache ...`` (and
    ``python -m libervia_cache ...``) is parsed by the real click command without running
    it; ``pip install '.[extra]'`` must name existing extras; ``tox -e ENV`` existing tox
    environments; ``python FILE``/``bash FILE`` existing files of the repository.
``text``
    Not code (diagrams, synopses, output): nothing to run.

Fences whose info string is a MyST directive (``{toctree}``, ``{eval-rst}``...) are not
examples. A MyST comment line ``% doc-test: xfail REASON`` right before a block marks an
example that cannot pass yet (e.g. a tox environment another issue adds): the test is a
strict xfail, so it fails as soon as the example works, to have the marker removed.
"""

from __future__ import annotations

import asyncio
import configparser
import doctest
import json
import os
import re
import shlex
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import click
import pytest

from libervia_cache.analysers.microblog import parse_item
from libervia_cache.backend.config import SCHEMA, load_config
from libervia_cache.plugin.xml import parse_element
from libervia_cache.storage.query import parse_search_query

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "doc"

LANGUAGES = {"pycon", "python", "ini", "json", "xml", "sh", "shell", "bash", "console", "text"}
SHELL_LANGUAGES = {"sh", "shell", "bash", "console"}

_FENCE_RE = re.compile(r"^(?P<indent>\s*)(?P<fence>`{3,}|~{3,})(?P<info>.*)$")
_MARKER_RE = re.compile(r"^\s*%\s*doc-test:\s*(?P<marker>.+?)\s*$")

FAKE_PEM = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"


@dataclass(frozen=True)
class Block:
    """One fenced code block of a page."""

    page: Path
    line: int  # 1-based line of the opening fence
    language: str
    text: str
    marker: str | None

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def pages() -> list[Path]:
    return sorted(p for p in DOC.rglob("*.md") if "_build" not in p.relative_to(DOC).parts)


def read_blocks(page: Path) -> list[Block]:
    """The fenced code blocks of a Markdown page (MyST directive fences excluded)."""
    lines = page.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    index = 0
    while index < len(lines):
        opening = _FENCE_RE.match(lines[index])
        if opening is None:
            index += 1
            continue
        indent, fence = opening["indent"], opening["fence"]
        info = opening["info"].strip()
        start = index
        index += 1
        body: list[str] = []
        while index < len(lines):
            closing = _FENCE_RE.match(lines[index])
            if (
                closing is not None
                and closing["fence"][0] == fence[0]
                and len(closing["fence"]) >= len(fence)
                and not closing["info"].strip()
            ):
                break
            body.append(lines[index])
            index += 1
        index += 1
        if info.startswith("{"):
            continue
        marker = None
        previous = start - 1
        while previous >= 0 and not lines[previous].strip():
            previous -= 1
        if previous >= 0 and (found := _MARKER_RE.match(lines[previous])):
            marker = found["marker"]
        text = "\n".join(line[len(indent) :] if line.startswith(indent) else line for line in body)
        language = info.split()[0] if info else ""
        blocks.append(Block(page, start + 1, language, textwrap.dedent(text) + "\n", marker))
    return blocks


def all_blocks(*languages: str) -> list[Block]:
    return [b for page in pages() for b in read_blocks(page) if b.language in languages]


def params(blocks: list[Block]) -> list[object]:
    """pytest params named after the block's place, honouring ``xfail`` markers."""
    result: list[object] = []
    for block in blocks:
        marks = []
        if block.marker and block.marker.startswith("xfail"):
            reason = block.marker.removeprefix("xfail").strip() or "marked xfail in the page"
            marks.append(pytest.mark.xfail(reason=reason, strict=True))
        result.append(pytest.param(block, id=block.where, marks=marks))
    return result


# --- the pages themselves -------------------------------------------------------------


def test_pages_exist() -> None:
    names = {p.name for p in pages()}
    assert {"index.md", "storage.md", "analysers.md", "configuration.md"} <= names


@pytest.mark.parametrize("page", pages(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_code_block_has_a_known_language(page: Path) -> None:
    unknown = [
        f"{b.where}: {b.language or '(none)'}"
        for b in read_blocks(page)
        if b.language not in LANGUAGES
    ]
    assert not unknown, (
        "code blocks need a language this test knows how to run "
        f"({', '.join(sorted(LANGUAGES))}): {unknown}"
    )


# --- pycon: doctests, one shared namespace per page -----------------------------------


def _pycon_pages() -> list[Path]:
    return [p for p in pages() if any(b.language == "pycon" for b in read_blocks(p))]


@pytest.mark.parametrize("page", _pycon_pages(), ids=lambda p: str(p.relative_to(ROOT)))
def test_pycon_examples(page: Path) -> None:
    environ = dict(os.environ)
    cwd = Path.cwd()
    # examples may call asyncio.run(), which leaves no current event loop behind
    loop = asyncio.get_event_loop_policy().get_event_loop()
    parser = doctest.DocTestParser()
    runner = doctest.DocTestRunner(
        optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False
    )
    report: list[str] = []
    globs: dict[str, object] = {"__name__": "__doc_example__"}
    try:
        for block in read_blocks(page):
            if block.language != "pycon":
                continue
            test = parser.get_doctest(block.text, globs, block.where, str(page), block.line)
            runner.run(test, out=report.append, clear_globs=False)
            globs = test.globs  # DocTest copies its globals: carry them to the next block
    finally:
        os.environ.clear()
        os.environ.update(environ)
        os.chdir(cwd)
        asyncio.set_event_loop(loop)
    results = runner.summarize(verbose=False)
    assert results.attempted > 0
    assert results.failed == 0, "".join(report)


# --- python: standalone snippets --------------------------------------------------------


def test_python_examples() -> None:
    # the docs use doctest (pycon) blocks; a plain python block, if one appears, runs too
    for block in all_blocks("python"):
        code = compile(block.text, block.where, "exec")
        exec(code, {"__name__": "__doc_example__"})


# --- ini: the daemon's configuration, or an excerpt of setup.cfg ---------------------------


@pytest.mark.parametrize("block", params(all_blocks("ini")))
def test_ini_examples(block: Block, tmp_path: Path) -> None:
    if block.marker == "setup.cfg":
        excerpt = configparser.ConfigParser(interpolation=None)
        excerpt.read_string(block.text)
        real = configparser.ConfigParser(interpolation=None)
        real.read(ROOT / "setup.cfg", encoding="utf-8")
        for section in excerpt.sections():
            assert real.has_section(section), f"{block.where}: no [{section}] in setup.cfg"
            for key, value in excerpt[section].items():
                assert real.has_option(section, key), f"{block.where}: no {key} in [{section}]"
                wanted = {line.strip() for line in value.splitlines() if line.strip()}
                actual = {line.strip() for line in real[section][key].splitlines()}
                assert wanted <= actual, f"{block.where}: [{section}] {key}: {wanted - actual}"
        return
    (tmp_path / "ca.pem").write_text(FAKE_PEM)
    path = tmp_path / "libervia-cache.conf"
    path.write_text(block.text, encoding="utf-8")
    load_config(path)


# --- json -------------------------------------------------------------------------------


@pytest.mark.parametrize("block", params(all_blocks("json")))
def test_json_examples(block: Block) -> None:
    data = json.loads(block.text)
    if block.marker == "search query":
        parse_search_query(data)
    elif block.marker == "microblog parse_item of the xml block above":
        xml = [b for b in read_blocks(block.page) if b.language == "xml" and b.line < block.line]
        assert xml, f"{block.where}: no xml block above"
        item = parse_element(xml[-1].text.strip())
        assert parse_item(None, item, None, "urn:xmpp:microblog:0") == data
    else:
        assert block.marker is None, f"{block.where}: unknown marker {block.marker!r}"


@pytest.mark.parametrize("block", params(all_blocks("xml")))
def test_xml_examples(block: Block) -> None:
    parse_element(block.text.strip())


# --- shell: command lines ---------------------------------------------------------------


def command_lines(block: Block) -> Iterator[list[str]]:
    """Each command of a shell block, split like the shell would (``&&``, ``;``, ``|``)."""
    logical: list[str] = []
    pending = ""
    for raw in block.text.splitlines():
        line = raw.rstrip()
        if block.language == "console":
            if pending:
                pass
            elif line.startswith("$ "):
                line = line[2:]
            else:
                continue  # output
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    for line in logical:
        words = shlex.split(line, comments=True)
        command: list[str] = []
        for word in [*words, ";"]:
            if word in ("&&", "||", ";", "|"):
                if command:
                    yield command
                command = []
            else:
                command.append(word)


def _protected_args(ctx: click.Context) -> list[str]:
    protected = getattr(ctx, "_protected_args", None)  # click >= 8.2
    if protected is None:
        protected = ctx.protected_args
    return list(protected)


def dry_parse(args: list[str]) -> None:
    """Parse ``libervia-cache ARGS`` down to the last subcommand, running nothing."""
    from libervia_cache.cli import main

    try:
        ctx = main.make_context("libervia-cache", list(args))
        command: click.Command = main
        while isinstance(command, click.Group):
            rest = [*_protected_args(ctx), *ctx.args]
            if not rest:
                break
            name, sub, rest = command.resolve_command(ctx, rest)
            assert sub is not None and name is not None
            ctx = sub.make_context(name, rest, parent=ctx)
            command = sub
    except click.exceptions.Exit as done:  # --help, --version
        assert done.exit_code == 0


def _extras() -> set[str]:
    setup = configparser.ConfigParser(interpolation=None)
    setup.read(ROOT / "setup.cfg", encoding="utf-8")
    if not setup.has_section("options.extras_require"):
        return set()
    return set(setup["options.extras_require"])


def _tox_envs() -> set[str]:
    tox = configparser.ConfigParser(interpolation=None)
    tox.read(ROOT / "tox.ini", encoding="utf-8")
    envs = {s.removeprefix("testenv:") for s in tox.sections() if s.startswith("testenv:")}
    envlist = tox.get("tox", "envlist", fallback="")
    return envs | {e.strip() for e in re.split(r"[,\s]+", envlist) if e.strip()}


def check_command(words: list[str], where: str) -> None:
    program, args = words[0], words[1:]
    if program == "libervia-cache":
        dry_parse(args)
    elif program in ("python", "python3") and args[:2] == ["-m", "libervia_cache"]:
        dry_parse(args[2:])
    elif program in ("python", "python3", "bash") and args and not args[0].startswith("-"):
        assert (ROOT / args[0]).is_file(), f"{where}: {args[0]} does not exist"
    elif program in ("pip", "pip3") and args[:1] == ["install"]:
        for arg in args[1:]:
            if found := re.fullmatch(r"\.\[(?P<extras>[^\]]+)\]", arg):
                missing = set(found["extras"].split(",")) - _extras()
                assert not missing, f"{where}: no extra(s) {missing} in setup.cfg"
    elif program == "tox" and "-e" in args:
        wanted = set(args[args.index("-e") + 1].split(","))
        missing = wanted - _tox_envs()
        assert not missing, f"{where}: no tox environment(s) {missing} in tox.ini"


@pytest.mark.parametrize("block", params(all_blocks(*SHELL_LANGUAGES)))
def test_shell_examples(block: Block) -> None:
    for words in command_lines(block):
        try:
            check_command(words, block.where)
        except click.ClickException as error:
            pytest.fail(f"{block.where}: {shlex.join(words)}: {error.format_message()}")


def test_dry_parse_catches_a_bad_command_line() -> None:
    dry_parse(["get", "pubsub.example.org", "urn:xmpp:microblog:0", "--max-items", "5"])
    with pytest.raises(click.UsageError):
        dry_parse(["get", "pubsub.example.org", "node", "--max-itemz", "5"])
    with pytest.raises(click.UsageError):
        dry_parse(["no-such-command"])


# --- the configuration reference is complete -----------------------------------------


def test_configuration_reference_documents_every_key() -> None:
    """Every key of every section is in the reference table, with its default."""
    text = (DOC / "configuration.md").read_text(encoding="utf-8")
    headings = {"daemon": "[daemon]", "pubsub_cache": "[pubsub_cache]", "profile": "[profile NAME]"}
    for kind, keys in SCHEMA.items():
        section = re.search(
            rf"^## `{re.escape(headings[kind])}`\n(?P<body>.*?)(?=^## |\Z)", text, re.M | re.S
        )
        assert section is not None, f"no '## `{headings[kind]}`' section in configuration.md"
        rows = {
            found["key"]: found["default"]
            for found in re.finditer(
                r"^\| `(?P<key>[a-z_]+)` \| (?P<default>[^|]*) \|", section["body"], re.M
            )
        }
        assert set(rows) == set(keys), f"[{headings[kind]}]: documented {set(rows)}"
        for key, spec in keys.items():
            if spec.computed or spec.default is None:
                continue
            default = str(spec.default) if spec.default.__class__ is not object else "required"
            assert rows[key].strip() in (f"`{default}`", default), (
                f"[{headings[kind]}] {key}: the page says {rows[key]!r}, the code {default!r}"
            )
