"""The text full-text search indexes: an item's human text, never its markup."""

from __future__ import annotations

import pytest

from libervia_cache.storage.fts import extract_text

ATOM = "http://www.w3.org/2005/Atom"
PUBSUB = "http://jabber.org/protocol/pubsub"


def entry(body: str) -> str:
    return f"<item xmlns='{PUBSUB}' id='1'><entry xmlns='{ATOM}'>{body}</entry></item>"


LINK_HTML = (
    "&lt;p&gt;We &lt;a href=&quot;https://example.org/&quot; rel=&quot;nofollow&quot; "
    "class=&quot;invisible&quot;&gt;announce&lt;/a&gt; it &amp;amp; more&lt;/p&gt;"
)


def test_text_nodes_only_no_tag_or_attribute_names() -> None:
    text = extract_text(entry("<title>Hello</title><link rel='alternate' href='x'/>"))
    assert text == "Hello"


@pytest.mark.parametrize("element", ["title", "subtitle", "summary", "content", "rights"])
@pytest.mark.parametrize("kind", ["html", "text/html", " HTML "])
def test_escaped_html_of_atom_text_elements_gives_its_text(element: str, kind: str) -> None:
    text = extract_text(entry(f"<{element} type='{kind}'>{LINK_HTML}</{element}>"))
    assert text == "We announce it & more"


def test_escaped_html_in_cdata_gives_its_text() -> None:
    text = extract_text(
        entry(
            "<content type='html'><![CDATA[<html xmlns='http://jabber.org/protocol/xhtml-im'>"
            "<body><p>Bonjour <b>tout</b> le monde</p><img src='logo.png'/></body></html>]]>"
            "</content>"
        )
    )
    assert text == "Bonjour tout le monde"


def test_scripts_styles_and_comments_of_html_are_not_text() -> None:
    text = extract_text(
        entry(
            "<content type='html'>&lt;style&gt;p {color: red}&lt;/style&gt;&lt;!-- hidden --&gt;"
            "shown&lt;script&gt;track()&lt;/script&gt;</content>"
        )
    )
    assert text == "shown"


def test_nested_atom_entries_are_read_the_same_way() -> None:
    """ActivityStreams objects nest Atom elements (GNU social repeats)."""
    text = extract_text(
        entry(
            "<object xmlns='http://activitystrea.ms/spec/1.0/'>"
            f"<content xmlns='{ATOM}' type='html'>{LINK_HTML}</content></object>"
        )
    )
    assert text == "We announce it & more"


def test_xhtml_keeps_its_text_nodes() -> None:
    text = extract_text(
        entry(
            "<content type='xhtml'><div xmlns='http://www.w3.org/1999/xhtml'>"
            "<p>One <a href='x'>link</a></p><p>Two &amp;lt;b&amp;gt;</p></div></content>"
        )
    )
    # an xhtml element's text nodes are text, even when they look like markup
    assert text == "One link Two &lt;b&gt;"


def test_xhtml_holding_only_escaped_markup_is_read_as_html() -> None:
    text = extract_text(
        entry(
            "<content type='application/xhtml+xml'>&lt;p&gt;Hello &lt;b&gt;world&lt;/b&gt;"
            "&lt;/p&gt;</content>"
        )
    )
    assert text == "Hello world"


def test_plain_text_that_looks_like_markup_is_kept_as_written() -> None:
    text = extract_text(entry("<title type='text'>&lt;b&gt;R&amp;D&lt;/b&gt; &lt;3</title>"))
    assert text == "<b>R&D</b> <3"


def test_html_outside_atom_text_elements_is_text() -> None:
    text = extract_text(
        f"<item xmlns='{PUBSUB}' id='1'><note xmlns='urn:example' type='html'>"
        "&lt;b&gt;bold&lt;/b&gt;</note></item>"
    )
    assert text == "<b>bold</b>"


def test_whitespace_is_normalised() -> None:
    text = extract_text(
        entry(
            "<title>  two\n\n words </title>"
            "<content type='html'>&lt;p&gt; a\tb &lt;/p&gt;</content>"
        )
    )
    assert text == "two words a b"


def test_deep_nesting_does_not_exhaust_the_stack() -> None:
    depth = 5000
    text = extract_text("<a>" * depth + "deep" + "</a>" * depth)
    assert text == "deep"


def test_not_well_formed_xml_falls_back_to_stripping_tags() -> None:
    assert extract_text("<item><title>broken &amp; </item>") == "broken &"
