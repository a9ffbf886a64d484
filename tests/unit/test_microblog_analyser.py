"""The XEP-0277 microblog analyser: its parser and its registration with the cache."""

from __future__ import annotations

import ast
import json
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.words.protocols.jabber.jid import JID
from twisted.words.xish import domish

from libervia_cache.analysers import microblog
from libervia_cache.analysers.microblog import (
    NS_ATOM,
    PLUGIN_INFO,
    MicroblogAnalyser,
    match_cb,
    parse_item,
)

NS_PUBSUB = "http://jabber.org/protocol/pubsub"
NS_THREAD = "http://purl.org/syndication/thread/1.0"
SERVICE = JID("pubsub.example.org")
NODE = "urn:xmpp:microblog:0"


def element_from_xml(xml: str) -> domish.Element:
    """Parse one XML element (with its children) into a domish Element."""
    roots: list[domish.Element] = []
    stream = domish.elementStream()
    stream.DocumentStartEvent = roots.append
    stream.ElementEvent = lambda element: roots[0].addChild(element)
    stream.DocumentEndEvent = lambda: None
    stream.parse(xml.encode())
    assert roots, f"no element in {xml!r}"
    return roots[0]


def item(entry: str, item_id: str = "item-1", attributes: str = "") -> domish.Element:
    """A pubsub ``<item>`` wrapping ``entry`` (an XML string)."""
    return element_from_xml(f'<item xmlns="{NS_PUBSUB}" id="{item_id}" {attributes}>{entry}</item>')


def parse(item_elt: domish.Element, node: str = NODE) -> dict[str, Any]:
    data = parse_item(None, item_elt, SERVICE, node)
    json.dumps(data)  # always JSON-serialisable
    return data


ITEM_URI = "xmpp:juliet@capulet.example?;node=urn%3Axmpp%3Amicroblog%3A0;item=item-1"
TEXT_ENTRY = f"""
<entry xmlns="{NS_ATOM}" xml:lang="en">
  <title type="text">Hanamura   </title>
  <content type="text">Here is a post with   spaces.
second line</content>
  <author>
    <name>Juliet</name>
    <uri>xmpp:juliet@capulet.example</uri>
    <email>juliet@capulet.example</email>
  </author>
  <link rel="alternate" href="{ITEM_URI}"/>
  <id>tag:capulet.example,2008:posts-1</id>
  <published>2008-04-01T12:00:00+02:00</published>
  <updated>2008-04-01T10:30:00.250Z</updated>
</entry>
"""


# ---------------------------------------------------------------------------------------
# parser


def test_text_entry_gives_every_field_it_holds() -> None:
    data = parse(item(TEXT_ENTRY))
    assert data == {
        "id": "item-1",
        "atom_id": "tag:capulet.example,2008:posts-1",
        "title": "Hanamura",
        "content": "Here is a post with   spaces.\nsecond line",
        "author": {
            "name": "Juliet",
            "uri": "xmpp:juliet@capulet.example",
            "email": "juliet@capulet.example",
            "jid": "juliet@capulet.example",
        },
        "links": [
            {
                "rel": "alternate",
                "href": ITEM_URI,
            }
        ],
        "published": "2008-04-01T10:00:00Z",
        "published_ts": 1207044000.0,
        "updated": "2008-04-01T10:30:00Z",
        "updated_ts": 1207045800.25,
        "language": "en",
    }


def test_dates_are_normalised_to_utc() -> None:
    data = parse(
        item(
            f'<entry xmlns="{NS_ATOM}"><published>2024-03-01t23:30:00-01:00</published>'
            "<updated>2024-03-02T00:30:00</updated></entry>"
        )
    )
    assert data["published"] == "2024-03-02T00:30:00Z"
    # a date without offset is taken as UTC
    assert data["updated"] == "2024-03-02T00:30:00Z"
    assert data["published_ts"] == data["updated_ts"] == 1709339400.0


def test_normalised_dates_are_fixed_width_even_before_year_1000() -> None:
    data = parse(
        item(f"<entry xmlns='{NS_ATOM}'><published>0042-01-02T03:04:05Z</published></entry>")
    )
    assert data["published"] == "0042-01-02T03:04:05Z"


@pytest.mark.parametrize(
    ("written", "normalised", "timestamp"),
    [
        # RFC 3339 / ISO 8601
        ("2021-09-06T16:45:00Z", "2021-09-06T16:45:00Z", 1630946700.0),
        ("2021-09-06t16:45:00z", "2021-09-06T16:45:00Z", 1630946700.0),
        ("2021-09-06T18:45:00+02:00", "2021-09-06T16:45:00Z", 1630946700.0),
        ("2021-09-06T11:45:00-05:00", "2021-09-06T16:45:00Z", 1630946700.0),
        ("2021-09-06T16:45:00.25Z", "2021-09-06T16:45:00Z", 1630946700.25),
        ("2021-09-06T17:45:00.418277+01:00", "2021-09-06T16:45:00Z", 1630946700.418277),
        ("2021-09-06 16:45:00Z", "2021-09-06T16:45:00Z", 1630946700.0),
        ("2021-09-06T16:45:00", "2021-09-06T16:45:00Z", 1630946700.0),
        # ISO 8601 basic offsets, as PHP's DATE_ISO8601 writes them (Movim 2015-2024)
        ("2021-09-06T17:45:00+0100", "2021-09-06T16:45:00Z", 1630946700.0),
        ("2021-09-06T16:45:00+0000", "2021-09-06T16:45:00Z", 1630946700.0),
        # an odd offset before 1970 (RFC 3339 §5.8)
        ("1937-01-01T12:00:27.87+00:20", "1937-01-01T11:40:27Z", -1041337172.13),
        # RFC 2822, as RSS-to-pubsub gateways pass pubDate through
        ("Mon, 06 Sep 2021 16:45:00 +0000", "2021-09-06T16:45:00Z", 1630946700.0),
        ("Mon, 06 Sep 2021 18:45:00 +0200", "2021-09-06T16:45:00Z", 1630946700.0),
        ("06 Sep 2021 16:45:00 GMT", "2021-09-06T16:45:00Z", 1630946700.0),
        ("Mon, 06 Sep 2021 16:45:00 -0000", "2021-09-06T16:45:00Z", 1630946700.0),
        ("Mon, 06 Sep 2021 11:45:00 EST", "2021-09-06T16:45:00Z", 1630946700.0),
        ("Mon, 6 Sep 21 16:45 UT", "2021-09-06T16:45:00Z", 1630946700.0),
    ],
)
def test_dates_are_read_in_rfc_3339_iso_8601_and_rfc_2822_forms(
    written: str, normalised: str, timestamp: float
) -> None:
    data = parse(item(f"<entry xmlns='{NS_ATOM}'><updated>{written}</updated></entry>"))
    assert data["updated"] == normalised
    assert data["updated_ts"] == pytest.approx(timestamp, abs=1e-6)
    assert "updated_raw" not in data


@pytest.mark.parametrize(
    "written",
    [
        "1990-12-31T23:59:60Z",
        "1990-12-31T15:59:60-08:00",
        "1990-12-31t23:59:60z",
        "Mon, 31 Dec 1990 23:59:60 +0000",
    ],
)
def test_a_leap_second_is_read_as_the_next_second(written: str) -> None:
    data = parse(item(f"<entry xmlns='{NS_ATOM}'><published>{written}</published></entry>"))
    assert data["published"] == "1991-01-01T00:00:00Z"
    assert data["published_ts"] == 662688000.0


def test_a_leap_second_keeps_its_fraction() -> None:
    data = parse(
        item(f"<entry xmlns='{NS_ATOM}'><published>1990-12-31T23:59:60.5Z</published></entry>")
    )
    assert data["published_ts"] == 662688000.5


@pytest.mark.parametrize(
    "written", ["TIME", "1990-12-31T23:60:00Z", "9999-12-31T23:59:60Z", "Mon, 32 Sep 2021"]
)
def test_unreadable_dates_are_kept_raw(written: str) -> None:
    data = parse(item(f"<entry xmlns='{NS_ATOM}'><published>{written}</published></entry>"))
    assert data["published_raw"] == written
    assert "published" not in data and "published_ts" not in data


def test_xhtml_content_gives_plain_text_and_serialised_xhtml() -> None:
    data = parse(
        item(
            f"""<entry xmlns="{NS_ATOM}">
              <title type="xhtml"><div xmlns="http://www.w3.org/1999/xhtml">A <em>bold</em>
                title</div></title>
              <content type="xhtml"><div xmlns="http://www.w3.org/1999/xhtml"><p>First
                <strong>paragraph</strong>.</p><p>Second &amp; last.</p></div></content>
            </entry>"""
        )
    )
    assert data["title"] == "A bold\ntitle"
    assert data["content"] == "First\nparagraph.\nSecond & last."
    xhtml = element_from_xml(data["content_xhtml"])
    assert (xhtml.uri, xhtml.name) == ("http://www.w3.org/1999/xhtml", "div")
    assert [p.name for p in xhtml.elements()] == ["p", "p"]
    assert data["title_xhtml"].startswith("<div")


def test_text_and_xhtml_content_together_keep_the_text_one_as_plain_text() -> None:
    data = parse(
        item(
            f"""<entry xmlns="{NS_ATOM}">
              <content type="xhtml"><div xmlns="http://www.w3.org/1999/xhtml"><p>rich</p></div></content>
              <content type="text">plain version</content>
            </entry>"""
        )
    )
    assert data["content"] == "plain version"
    assert "rich" in data["content_xhtml"]


def test_html_content_is_kept_escaped_and_its_text_extracted() -> None:
    data = parse(
        item(
            f'<entry xmlns="{NS_ATOM}"><content type="html">'
            "&lt;p&gt;Hello &amp;amp; &lt;b&gt;world&lt;/b&gt;&lt;/p&gt;</content></entry>"
        )
    )
    assert data["content_html"] == "<p>Hello &amp; <b>world</b></p>"
    assert data["content"] == "Hello & world"


@pytest.mark.parametrize("kind", ["html", "text/html", "HTML"])
def test_html_content_by_any_of_its_type_names_gives_its_text(kind: str) -> None:
    data = parse(
        item(
            f'<entry xmlns="{NS_ATOM}"><content type="{kind}">'
            "&lt;p&gt;We &lt;a href='x' rel='nofollow'&gt;announce&lt;/a&gt;&lt;/p&gt;"
            "&lt;script&gt;track()&lt;/script&gt;&lt;p&gt;it&lt;/p&gt;</content></entry>"
        )
    )
    assert data["content"] == "We announce\nit"
    assert "content_html" in data


def test_xhtml_content_holding_escaped_markup_is_read_as_html() -> None:
    """feedparser-based gateways write Atom xhtml content as escaped text under
    ``application/xhtml+xml``: invalid Atom, but real."""
    data = parse(
        item(
            f'<entry xmlns="{NS_ATOM}"><content type="application/xhtml+xml">'
            "&lt;p&gt;Hello &lt;b&gt;world&lt;/b&gt;&lt;/p&gt;</content></entry>"
        )
    )
    assert data["content"] == "Hello world"
    assert data["content_html"] == "<p>Hello <b>world</b></p>"
    assert "content_xhtml" not in data


def test_text_content_holding_markup_is_kept_as_written() -> None:
    data = parse(
        item(
            f'<entry xmlns="{NS_ATOM}">'
            '<title type="text">&lt;b&gt;R&amp;D&lt;/b&gt;</title></entry>'
        )
    )
    assert data["title"] == "<b>R&D</b>"


def test_cdata_is_read_as_text() -> None:
    data = parse(
        item(
            f"<entry xmlns='{NS_ATOM}'><title><![CDATA[1 < 2 & <b>]]></title>"
            "<summary> sum<![CDATA[mary]]> </summary></entry>"
        )
    )
    assert data["title"] == "1 < 2 & <b>"
    assert data["summary"] == "summary"


def test_categories_become_tags_in_order_without_duplicates() -> None:
    data = parse(
        item(
            f"""<entry xmlns="{NS_ATOM}">
              <category term="xmpp"/><category term="libervia" label="Libervia"/>
              <category term="xmpp"/><category term=" "/><category/>
              <category term="pubsub"/>
            </entry>"""
        )
    )
    assert data["tags"] == ["xmpp", "libervia", "pubsub"]


def test_links_keep_their_present_attributes_and_comments_are_listed() -> None:
    comments_href = "xmpp:pubsub.example.org?;node=urn%3Axmpp%3Amicroblog%3A0%3Acomments%2Fitem-1"
    data = parse(
        item(
            f"""<entry xmlns="{NS_ATOM}">
              <link rel="replies" title="comments" href="{comments_href}"/>
              <link rel="enclosure" href="https://example.org/a.png" type="image/png"
                    title="A picture"/>
              <link href="https://example.org/"/>
              <link rel="replies" href="https://example.org/other-replies"/>
              <link/>
            </entry>"""
        )
    )
    assert data["links"] == [
        {"rel": "replies", "title": "comments", "href": comments_href},
        {
            "rel": "enclosure",
            "href": "https://example.org/a.png",
            "type": "image/png",
            "title": "A picture",
        },
        {"href": "https://example.org/"},
        {"rel": "replies", "href": "https://example.org/other-replies"},
    ]
    assert data["comments"] == [comments_href]


def test_reply_gives_in_reply_to() -> None:
    data = parse(
        item(
            f"""<entry xmlns="{NS_ATOM}" xmlns:thr="{NS_THREAD}">
              <title>Re: Hanamura</title>
              <thr:in-reply-to ref="tag:capulet.example,2008:posts-1"
                  href="xmpp:pubsub.example.org?;node=urn%3Axmpp%3Amicroblog%3A0;item=item-1"/>
            </entry>"""
        ),
        node="urn:xmpp:microblog:0:comments/item-1",
    )
    assert data["in_reply_to"] == "tag:capulet.example,2008:posts-1"
    assert data["in_reply_to_href"].startswith("xmpp:pubsub.example.org")


@pytest.mark.parametrize(
    ("uri", "jid"),
    [
        ("xmpp:romeo@montague.example", "romeo@montague.example"),
        ("xmpp:romeo@montague.example/balcony", "romeo@montague.example/balcony"),
        ("xmpp:romeo@montague.example?message", "romeo@montague.example"),
        ("XMPP:romeo@montague.example", "romeo@montague.example"),
        ("xmpp://guest@example.com/romeo@montague.example", "romeo@montague.example"),
        ("https://montague.example/romeo", None),
        ("xmpp:", None),
        ("xmpp:@", None),
    ],
)
def test_author_jid_comes_from_an_xmpp_uri(uri: str, jid: str | None) -> None:
    entry = f"<entry xmlns='{NS_ATOM}'><author><uri>{uri}</uri></author></entry>"
    author = parse(item(entry))["author"]
    assert author["uri"] == uri
    assert author.get("jid") == jid


def test_author_with_a_name_only() -> None:
    entry = f"<entry xmlns='{NS_ATOM}'><author><name> Romeo </name></author></entry>"
    assert parse(item(entry))["author"] == {"name": "Romeo"}


def test_publisher_attribute_is_kept() -> None:
    entry = f"<entry xmlns='{NS_ATOM}'/>"
    data = parse(item(entry, attributes='publisher="juliet@capulet.example"'))
    assert data == {"id": "item-1", "publisher": "juliet@capulet.example"}


def test_missing_fields_are_absent() -> None:
    assert parse(item(f"<entry xmlns='{NS_ATOM}'/>")) == {"id": "item-1"}
    empty = (
        f"<entry xmlns='{NS_ATOM}'><title/><content type='xhtml'/><author/>"
        "<published> </published><id/></entry>"
    )
    assert parse(item(empty)) == {"id": "item-1"}


def test_item_without_id_has_no_id() -> None:
    item_elt = element_from_xml(f"<item xmlns='{NS_PUBSUB}'><entry xmlns='{NS_ATOM}'/></item>")
    assert parse(item_elt) == {}


def test_invalid_date_is_kept_raw_without_timestamp() -> None:
    data = parse(
        item(
            f"<entry xmlns='{NS_ATOM}'><published>yesterday at noon</published>"
            "<updated>9999-12-31T23:59:59-23:59</updated></entry>"
        )
    )
    assert data["published_raw"] == "yesterday at noon"
    assert "published" not in data and "published_ts" not in data
    # valid syntax, but out of range once converted to UTC
    assert data["updated_raw"] == "9999-12-31T23:59:59-23:59"
    assert "updated_ts" not in data


def test_unknown_children_are_ignored() -> None:
    data = parse(
        item(
            f"""<entry xmlns="{NS_ATOM}" xmlns:geo="http://www.georss.org/georss">
              <geo:point>45.256 -71.92</geo:point>
              <generator>Libervia</generator>
              <title xmlns="urn:example:not-atom">not the title</title>
              <title>the title</title>
            </entry>"""
        )
    )
    assert data == {"id": "item-1", "title": "the title"}


def test_huge_content_is_parsed() -> None:
    body = "lorem ipsum " * 200_000
    data = parse(item(f"<entry xmlns='{NS_ATOM}'><content>{body}</content></entry>"))
    assert data["content"] == body.strip()


def test_deeply_nested_xhtml_does_not_exhaust_the_stack() -> None:
    depth = 5000
    element = domish.Element((NS_PUBSUB, "item"), attribs={"id": "deep"})
    content = element.addElement((NS_ATOM, "entry")).addElement("content")
    content["type"] = "xhtml"
    current = content.addElement(("http://www.w3.org/1999/xhtml", "div"))
    for _ in range(depth):
        current = current.addElement("span")
    current.addContent("bottom")
    data = parse(element)
    assert data["content"] == "bottom"


@pytest.mark.parametrize(
    "item_xml",
    [
        f"<item xmlns='{NS_PUBSUB}' id='1'/>",
        f"<item xmlns='{NS_PUBSUB}' id='1'>just text</item>",
        f"<item xmlns='{NS_PUBSUB}' id='1'><entry xmlns='urn:example:other'/></item>",
        f"<item xmlns='{NS_PUBSUB}' id='1'><feed xmlns='{NS_ATOM}'/></item>",
        (
            f"<item xmlns='{NS_PUBSUB}' id='1'><event xmlns='urn:xmpp:events:0'/>"
            f"<entry xmlns='{NS_ATOM}'/></item>"
        ),
    ],
)
def test_not_an_atom_entry_raises_value_error(item_xml: str) -> None:
    with pytest.raises(ValueError, match="Atom entry"):
        parse_item(None, element_from_xml(item_xml), SERVICE, NODE)


# ---------------------------------------------------------------------------------------
# arbitrary input

_text = st.text(max_size=40)
_dates = st.one_of(
    _text,
    st.datetimes(timezones=st.timezones()).map(lambda moment: moment.isoformat()),
    st.sampled_from(["0001-01-01T00:00:00+23:59", "9999-12-31T23:59:59-23:59", "2024-02-30"]),
)
_names = st.sampled_from(
    ["title", "content", "summary", "author", "name", "uri", "email", "published",
     "updated", "category", "link", "id", "div", "p", "in-reply-to", "unknown"]
)  # fmt: skip
_uris = st.sampled_from([NS_ATOM, NS_THREAD, "http://www.w3.org/1999/xhtml", "", "urn:x"])
_attributes = st.dictionaries(
    st.sampled_from(["type", "term", "rel", "href", "title", "ref", "id", "src"]),
    st.one_of(_text, st.sampled_from(["xhtml", "html", "text", "replies", "comments"])),
    max_size=4,
)


@st.composite
def _elements(draw: st.DrawFn, depth: int = 0) -> domish.Element:
    element = domish.Element((draw(_uris), draw(_names)), attribs=draw(_attributes))
    for _ in range(draw(st.integers(0, 3 if depth < 3 else 0))):
        if draw(st.booleans()):
            element.addContent(draw(st.one_of(_text, _dates)))
        else:
            element.addChild(draw(_elements(depth + 1)))
    return element


@st.composite
def _items(draw: st.DrawFn) -> domish.Element:
    item_elt = domish.Element((NS_PUBSUB, "item"), attribs=draw(_attributes))
    if draw(st.booleans()):
        entry = item_elt.addElement((NS_ATOM, "entry"))
        if draw(st.booleans()):
            entry[("http://www.w3.org/XML/1998/namespace", "lang")] = draw(_text)
        for _ in range(draw(st.integers(0, 8))):
            entry.addChild(draw(_elements()))
    else:
        for _ in range(draw(st.integers(0, 2))):
            item_elt.addChild(draw(_elements()))
    return item_elt


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(_items())
def test_parser_raises_only_value_error_and_returns_json(item_elt: domish.Element) -> None:
    try:
        data = parse_item(None, item_elt, SERVICE, NODE)
    except ValueError:
        return
    assert isinstance(data, dict)
    assert json.loads(json.dumps(data)) == data


@given(st.text(max_size=60))
def test_any_date_text_gives_a_timestamp_or_a_raw_string(date: str) -> None:
    element = domish.Element((NS_PUBSUB, "item"))
    element.addElement((NS_ATOM, "entry")).addElement("published", content=date)
    data = parse_item(None, element, SERVICE, NODE)
    json.dumps(data)
    if "published" in data:
        assert isinstance(data["published_ts"], float)
        assert data["published"].endswith("Z") and len(data["published"]) == 20
    else:
        assert "published_ts" not in data
        assert data.get("published_raw", "") == date.strip()


# ---------------------------------------------------------------------------------------
# registration


class FakeCache:
    """Stands for ``host.plugins["PUBSUB_CACHE"]``: records registered analysers."""

    def __init__(self) -> None:
        self.analysers: list[dict[str, Any]] = []

    def register_analyser(self, analyser: dict[str, Any]) -> None:
        self.analysers.append(analyser)


class FakeHost:
    def __init__(self) -> None:
        self.plugins: dict[str, Any] = {"PUBSUB_CACHE": FakeCache()}


@pytest.fixture
def registered() -> dict[str, Any]:
    host = FakeHost()
    MicroblogAnalyser(host)
    analysers = host.plugins["PUBSUB_CACHE"].analysers
    assert len(analysers) == 1
    return analysers[0]


def test_plugin_info_declares_the_cache_dependency() -> None:
    assert PLUGIN_INFO["import_name"] == "MICROBLOG_ANALYSER"
    assert PLUGIN_INFO["dependencies"] == ["PUBSUB_CACHE"]
    assert PLUGIN_INFO["recommendations"] == []
    assert PLUGIN_INFO["main"] == "MicroblogAnalyser"
    assert getattr(microblog, PLUGIN_INFO["main"]) is MicroblogAnalyser
    assert PLUGIN_INFO["name"] and PLUGIN_INFO["description"]


def test_registered_analyser_has_every_key(registered: dict[str, Any]) -> None:
    assert set(registered) == {
        "name", "type", "node", "namespace", "to_sync", "parser", "match_cb"
    }  # fmt: skip
    assert registered["name"] == "microblog"
    assert registered["type"] == "blog"
    assert registered["node"] == "urn:xmpp:microblog:0"
    assert registered["namespace"] == "http://www.w3.org/2005/Atom"
    assert registered["to_sync"] is True
    assert registered["parser"] is parse_item
    assert registered["match_cb"] is match_cb


def test_match_cb_sets_comment_subtype_on_comments_nodes(registered: dict[str, Any]) -> None:
    analysis: dict[str, Any] = {
        "service": SERVICE,
        "node": "urn:xmpp:microblog:0:comments/some-item-id",
        "name": "microblog",
        "type": "blog",
    }
    assert registered["match_cb"](None, analysis) is None
    assert analysis["subtype"] == "comment"


@pytest.mark.parametrize(
    "node",
    ["urn:xmpp:microblog:0", "urn:xmpp:microblog:0:other", "urn:xmpp:microblog:0:comments"],
)
def test_match_cb_leaves_other_nodes_alone(registered: dict[str, Any], node: str) -> None:
    analysis: dict[str, Any] = {"service": SERVICE, "node": node, "type": "blog"}
    registered["match_cb"](None, analysis)
    assert analysis == {"service": SERVICE, "node": node, "type": "blog"}


def test_match_cb_tolerates_an_analysis_without_node(registered: dict[str, Any]) -> None:
    analysis: dict[str, Any] = {}
    registered["match_cb"](None, analysis)
    assert analysis == {}


def test_module_imports_neither_the_cache_plugin_nor_the_daemon() -> None:
    tree = ast.parse(Path(microblog.__file__).read_text())
    imported = {
        name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for name in (
            [alias.name for alias in node.names]
            if isinstance(node, ast.Import)
            else [node.module or ""]
        )
    }
    assert not {name for name in imported if name.startswith("libervia_cache")}


def test_module_is_shipped_through_the_plugins_entry_point() -> None:
    entry_points = metadata.entry_points(group="libervia.backend.plugins")
    matching = [ep for ep in entry_points if ep.name == "MICROBLOG_ANALYSER"]
    assert [ep.value for ep in matching] == ["libervia_cache.analysers.microblog"]
    assert matching[0].load() is microblog


@given(st.datetimes(min_value=datetime(1000, 1, 2), max_value=datetime(9999, 12, 30)))
def test_any_utc_datetime_round_trips(moment: datetime) -> None:
    moment = moment.replace(tzinfo=UTC)
    element = domish.Element((NS_PUBSUB, "item"))
    element.addElement((NS_ATOM, "entry")).addElement("updated", content=moment.isoformat())
    data = parse_item(None, element, SERVICE, NODE)
    assert data["updated_ts"] == moment.timestamp()
    assert data["updated"] == moment.replace(microsecond=0).isoformat().replace("+00:00", "Z")
