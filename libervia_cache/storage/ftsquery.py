"""FTS5 full-text queries, read as SQLite reads them and written as PostgreSQL ``tsquery``.

The ``fts`` of a search is an FTS5 query on both databases (checked by
:func:`libervia_cache.storage.query.parse_search_query` against SQLite's own parser
first, so only valid queries reach this module). On PostgreSQL, :func:`to_tsquery`
parses it with FTS5's grammar and precedences (``NOT`` over ``AND`` over ``OR``;
adjacent phrases are an implicit ``AND`` binding tighter than any operator), tokenises
its strings with the tokenizer of the index (:func:`.fts.tokenize`), and writes the
``tsquery`` that matches the same documents:

=====================  ==============================================================
FTS5                   tsquery
=====================  ==============================================================
``word``, ``"a b"``    ``'word'``, ``'a' <-> 'b'``
``a + b``              ``'a' <-> 'b'``
``pre*``               ``'pre':*``
``^word``              ``'word':A`` (the first token of an item is weighted ``A``)
``a AND b``, ``a b``   ``'a' & 'b'``
``a OR b``             ``'a' | 'b'``
``a NOT b``            ``'a' & !'b'``
``NEAR(a b, N)``       every placement of the phrases within N tokens, ORed
``text: x``            ``x`` (the one column); ``-text: x``: matches nothing
=====================  ==============================================================

As in FTS5, a phrase with no token (``"..."``) is left out of a NEAR group and of
adjacent phrases (``a "."`` is ``a``), and of ``OR`` and the right of ``NOT``; an
explicit ``AND`` with it matches nothing, and so does a query left with nothing. A
``NEAR`` group is spelt out as its placements; one that would need more than
:data:`MAX_NEAR_PLACEMENTS` is refused (:class:`NearTooLarge`).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from .fts import tokenize, tsquery_lexeme

#: most placements a NEAR group may expand to (NEAR of 3 single words at distance 10 is
#: 397; of 4, 6,095)
MAX_NEAR_PLACEMENTS = 1000

#: FTS5's default NEAR distance
DEFAULT_NEAR = 10


class NearTooLarge(ValueError):
    """A NEAR group too large to be written as a ``tsquery``."""


# --- the query's tokens (fts5ExprGetToken) --------------------------------------------

_PUNCTUATION = {
    "(": "LP",
    ")": "RP",
    "{": "LCP",
    "}": "RCP",
    ":": "COLON",
    ",": "COMMA",
    "+": "PLUS",
    "*": "STAR",
    "-": "MINUS",
    "^": "CARET",
}
_KEYWORDS = {"AND", "OR", "NOT"}


def _is_bareword(c: str) -> bool:
    return (c.isascii() and (c.isalnum() or c in "_\x1a")) or not c.isascii()


@dataclass(frozen=True)
class _Token:
    kind: str  # LP, RP, ..., STRING, AND, OR, NOT
    text: str = ""
    quoted: bool = False


def _lex(query: str) -> list[_Token]:
    tokens: list[_Token] = []
    i = 0
    while i < len(query):
        c = query[i]
        if c.isspace():
            i += 1
        elif c in _PUNCTUATION:
            tokens.append(_Token(_PUNCTUATION[c]))
            i += 1
        elif c == '"':
            j, text = i + 1, []
            while j < len(query):
                if query[j] == '"':
                    if query[j + 1 : j + 2] == '"':
                        text.append('"')
                        j += 2
                        continue
                    break
                text.append(query[j])
                j += 1
            tokens.append(_Token("STRING", "".join(text), quoted=True))
            i = j + 1
        else:
            j = i
            while j < len(query) and _is_bareword(query[j]):
                j += 1
            if j == i:
                raise ValueError(f"unexpected {c!r}")  # SQLite refused it first
            word = query[i:j]
            tokens.append(_Token(word if word in _KEYWORDS else "STRING", word))
            i = j
    return tokens


# --- the tree ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Term:
    """One token of a phrase: ``prefix`` (``*``), ``initial`` (``^``: first of the item)."""

    text: str
    prefix: bool = False
    initial: bool = False


@dataclass(frozen=True)
class Phrase:
    terms: tuple[Term, ...]


@dataclass(frozen=True)
class Near:
    phrases: tuple[Phrase, ...]
    distance: int


@dataclass(frozen=True)
class Binary:
    op: str  # AND, OR, NOT, or IMPLICIT (adjacent phrases)
    left: Node
    right: Node


@dataclass(frozen=True)
class Excluded:
    """A column filter excluding the one column: matches nothing (but an empty phrase
    stays empty, and is left out as any other)."""

    node: Node


Node = Phrase | Near | Binary | Excluded


class _Parser:
    """FTS5's grammar (``fts5parse.y``) by recursive descent."""

    def __init__(self, tokens: list[_Token]) -> None:
        self.tokens = tokens
        self.at = 0

    def peek(self, offset: int = 0) -> _Token | None:
        index = self.at + offset
        return self.tokens[index] if index < len(self.tokens) else None

    def take(self, kind: str | None = None) -> _Token:
        token = self.peek()
        if token is None or (kind is not None and token.kind != kind):
            raise ValueError(f"expected {kind}")
        self.at += 1
        return token

    def kind(self, offset: int = 0) -> str | None:
        token = self.peek(offset)
        return token.kind if token is not None else None

    def parse(self) -> Node:
        node = self.expr("OR")
        if self.peek() is not None:
            raise ValueError("trailing tokens")
        return node

    # precedence: OR < AND < NOT, all left-associative
    def expr(self, level: str) -> Node:
        lower = {"OR": "AND", "AND": "NOT", "NOT": None}[level]
        node = self.expr(lower) if lower else self.primary()
        while self.kind() == level:
            self.take()
            right = self.expr(lower) if lower else self.primary()
            node = Binary(level, node, right)
        return node

    def colset(self) -> bool | None:
        """A column filter ahead (``text:``, ``-{text}:``): whether it keeps the one
        column; None when there is none (nothing taken)."""
        start = self.at
        negated = False
        if self.kind() == "MINUS":
            negated = True
            self.at += 1
        if self.kind() == "LCP":
            self.at += 1
            names = 0
            while self.kind() == "STRING":
                self.at += 1
                names += 1
            if self.kind() != "RCP" or self.kind(1) != "COLON":
                self.at = start
                return None
            self.at += 2
            return (names > 0) != negated
        if self.kind() == "STRING" and self.kind(1) == "COLON":
            self.at += 2
            return not negated
        self.at = start
        return None

    def primary(self) -> Node:
        if self.kind() == "LP":
            self.take()
            node = self.expr("OR")
            self.take("RP")
            return node
        start = self.at
        keeps = self.colset()
        if keeps is not None and self.kind() == "LP":
            self.take()
            node = self.expr("OR")
            self.take("RP")
            return node if keeps else Excluded(node)
        self.at = start
        # an implicit AND of adjacent (filtered) phrases and NEAR groups
        node = self.cnearset()
        while self.starts_nearset():
            node = Binary("IMPLICIT", node, self.cnearset())
        return node

    def starts_nearset(self) -> bool:
        kind = self.kind()
        return kind in ("STRING", "CARET", "LCP") or (
            kind == "MINUS" and self.kind(1) in ("STRING", "LCP")
        )

    def cnearset(self) -> Node:
        keeps = self.colset()
        node = self.nearset()
        return Excluded(node) if keeps is False else node

    def nearset(self) -> Node:
        token = self.peek()
        if (
            token is not None
            and token.kind == "STRING"
            and not token.quoted
            and token.text == "NEAR"
            and self.kind(1) == "LP"
        ):
            self.at += 2
            phrases = [self.phrase()]
            while self.kind() == "STRING":
                phrases.append(self.phrase())
            distance = DEFAULT_NEAR
            if self.kind() == "COMMA":
                self.take()
                distance = int(self.take("STRING").text)
            self.take("RP")
            return Near(tuple(phrases), distance)
        initial = False
        if self.kind() == "CARET":
            self.take()
            initial = True
        phrase = self.phrase()
        if initial and phrase.terms:
            first = phrase.terms[0]
            phrase = Phrase((Term(first.text, first.prefix, True), *phrase.terms[1:]))
        return phrase

    def phrase(self) -> Phrase:
        terms = self.piece()
        while self.kind() == "PLUS":
            self.take()
            terms += self.piece()
        return Phrase(tuple(terms))

    def piece(self) -> list[Term]:
        words = tokenize(self.take("STRING").text)
        prefix = False
        if self.kind() == "STAR":
            self.take()
            prefix = True
        terms = [Term(word) for word in words]
        if prefix and terms:
            terms[-1] = Term(terms[-1].text, prefix=True)
        return terms


def parse(query: str) -> Node:
    """The tree of a (valid) FTS5 query."""
    return _Parser(_lex(query)).parse()


# --- to tsquery -------------------------------------------------------------------------

#: a node's meaning once simplified: a tsquery, nothing matches, or left out (empty)
EMPTY = ""
NOTHING = None


def _term(term: Term) -> str:
    flags = ("*" if term.prefix else "") + ("A" if term.initial else "")
    return tsquery_lexeme(term.text) + (f":{flags}" if flags else "")


def _chain(placed: list[tuple[int, Term]]) -> str:
    """Terms at relative positions as one ``tsquery`` phrase (``<N>``: N positions on)."""
    parts = [_term(placed[0][1])]
    for (before, _), (at, term) in itertools.pairwise(placed):
        gap = at - before
        parts.append("<->" if gap == 1 else f"<{gap}>")
        parts.append(_term(term))
    return " ".join(parts)


def _merge(first: Term, second: Term) -> Term | None:
    """Two constraints on one position: the one term meeting both, or None."""
    initial = first.initial or second.initial
    if not first.prefix and not second.prefix:
        return Term(first.text, False, initial) if first.text == second.text else None
    if first.prefix and second.prefix:
        longer, shorter = sorted((first.text, second.text), key=len, reverse=True)
        return Term(longer, True, initial) if longer.startswith(shorter) else None
    exact, pattern = (second, first) if first.prefix else (first, second)
    return Term(exact.text, False, initial) if exact.text.startswith(pattern.text) else None


def _placement(phrases: tuple[Phrase, ...], starts: tuple[int, ...]) -> str | None:
    """The phrases at these start positions, as one phrase query (None: impossible)."""
    at: dict[int, Term] = {}
    for phrase, start in zip(phrases, starts, strict=True):
        for offset, term in enumerate(phrase.terms):
            position = start + offset
            known = at.get(position)
            merged = term if known is None else _merge(known, term)
            if merged is None:
                return None
            at[position] = merged
    placed = sorted(at.items())
    first = placed[0][0]
    if any(term.initial and position != first for position, term in placed):
        return None  # an initial token with another before it
    return _chain(placed)


def _near(node: Near) -> str | None:
    """FTS5's NEAR: instances of every phrase such that, the last one starting at ``m``,
    each phrase ``i`` starts at or after ``m - len(i) - N`` (at most N tokens between
    its end and that start). Spelt out as every such placement."""
    phrases = tuple(p for p in node.phrases if p.terms)
    if not phrases:
        return EMPTY
    if len(phrases) == 1:
        return _phrase(phrases[0])
    ranges = [range(-(len(p.terms) + node.distance), 1) for p in phrases]
    total = 1
    for r in ranges:
        total *= len(r)
    if total > MAX_NEAR_PLACEMENTS * 4:
        raise NearTooLarge(
            f"NEAR group of {len(phrases)} phrases at distance {node.distance} is too large "
            "for PostgreSQL (use fewer phrases or a smaller distance)"
        )
    alternatives: dict[str, None] = {}
    for starts in itertools.product(*ranges):
        if max(starts) != 0:
            continue
        chain = _placement(phrases, starts)
        if chain is not None:
            alternatives[chain] = None
    if len(alternatives) > MAX_NEAR_PLACEMENTS:
        raise NearTooLarge(
            f"NEAR group of {len(phrases)} phrases at distance {node.distance} is too large "
            "for PostgreSQL (use fewer phrases or a smaller distance)"
        )
    if not alternatives:
        return NOTHING
    return " | ".join(f"( {a} )" for a in alternatives)


def _phrase(node: Phrase) -> str | None:
    if not node.terms:
        return EMPTY
    return _placement((node,), (0,))


def _build(node: Node) -> str | None:
    if isinstance(node, Excluded):
        return EMPTY if _build(node.node) == EMPTY else NOTHING
    if isinstance(node, Phrase):
        return _phrase(node)
    if isinstance(node, Near):
        return _near(node)
    left, right = _build(node.left), _build(node.right)
    # as FTS5 does: an empty operand vanishes from adjacent phrases, OR and the right
    # of NOT, and makes an explicit AND match nothing; "nothing" absorbs as false does
    if left == EMPTY or right == EMPTY:
        if node.op == "AND":
            return NOTHING
        if left == EMPTY:
            return EMPTY if node.op == "NOT" else right
        return left
    if node.op == "OR":
        if left is NOTHING:
            return right
        if right is NOTHING:
            return left
        return f"( {left} ) | ( {right} )"
    if left is NOTHING:
        return NOTHING
    if node.op in ("AND", "IMPLICIT"):
        return NOTHING if right is NOTHING else f"( {left} ) & ( {right} )"
    return left if right is NOTHING else f"( {left} ) & !( {right} )"


def to_tsquery(query: str) -> str | None:
    """The ``tsquery`` text matching what the FTS5 ``query`` matches; None when it can
    match nothing. Raises :class:`NearTooLarge`."""
    built = _build(parse(query))
    return built if built else None
