"""What is left of a message once its fields are taken, turned into a name (pure).

:mod:`adapter.core.extract` hands over the leftover pieces (split at ``, ; | newline``).
Here they lose what people type around a name: a lead-in (``please add``, ``new lead:``,
``Hola equipo, por favor añade a``, ``请添加``), a greeting clause before more text
(``Hi Anna, …``), any ``words:`` prefix with name text after it, a closing courtesy or a
verb that comes last (``thanks!``, ``merci``, ``anlegen``, ``を追加してください``), a trailing
parenthesised remark that starts in lower case (``(called yesterday)``), and invisible
formatting characters at the edges. Everything else is kept as typed.
"""

from __future__ import annotations

import re
import unicodedata

from adapter.core.extract_words import CLOSING, LEAD_IN

__all__ = ["clean_piece", "name_from", "quoted_name", "symbols_in", "trim_invisible"]

_JOINERS = "\u200c\u200d"  # part of Persian and Indic spelling: kept (inside names)
_PIECE_EDGE = " \t\r,;|-–—:/\\·•*_~=&.!?¿¡，；：、。！？،؛؟"
_QUOTES = "\"'`“”‘’„«»「」"
_EMPTY_BRACKETS = re.compile(r"\(\s*\)|<\s*>|\[\s*\]|\{\s*\}")
_WHITESPACE = re.compile(r"\s+")
_AFTER_LEAD_IN = re.compile(r"[\s,，、:：;；!！.。\-–—،؛]*")
_PREFIX_COLON = re.compile(r"[:：](?!//)")
_REMARK = re.compile(r"\s*[(\[（]([^()\[\]（）]*)[)\]）]\s*$")
_GLUE = set(" \t,;|-–—:/\\·•=.>…")
_CLOSING_WINDOW = 120  # a closing is short: search only the end of a long piece
_PAIRS = {")": "(", "]": "[", "}": "{", "）": "（"}


def _invisible(ch: str) -> bool:
    return unicodedata.category(ch) == "Cf" or ch.isspace()


def trim_invisible(text: str) -> str:
    """``text`` without whitespace and invisible formatting characters at its edges."""
    start, end = 0, len(text)
    while start < end and _invisible(text[start]):
        start += 1
    while end > start and _invisible(text[end - 1]):
        end -= 1
    return text[start:end]


def _edge(ch: str, extra: str) -> bool:
    return ch in _PIECE_EDGE or ch in _QUOTES or ch in extra or _invisible(ch)


def _unbalanced_edges(piece: str) -> str:
    """A closing bracket with no opening one (left by a number beside it) is not the name's."""
    while piece and piece[-1] in _PAIRS and piece.count(_PAIRS[piece[-1]]) < piece.count(piece[-1]):
        piece = piece[:-1].rstrip()
    while piece and piece[0] in "([{（":
        closing = {"(": ")", "[": "]", "{": "}", "（": "）"}[piece[0]]
        if piece.count(closing) >= piece.count(piece[0]):
            break
        piece = piece[1:].lstrip()
    return piece


def clean_piece(piece: str) -> str:
    """A leftover piece without empty brackets, surrounding quotes and dangling punctuation."""
    piece = _EMPTY_BRACKETS.sub(" ", piece)
    piece = _WHITESPACE.sub(" ", piece)
    previous = None
    while previous != piece:
        previous = piece
        start, end = 0, len(piece)
        while start < end and _edge(piece[start], ")]}>"):
            start += 1
        while end > start and _edge(piece[end - 1], "([{<"):
            end -= 1
        piece = _unbalanced_edges(piece[start:end])
    return piece if any(ch.isalnum() for ch in piece) else ""


def quoted_name(value: str) -> str:
    """A quoted value as typed: only edge whitespace, invisibles and lone glue tokens go."""
    words = trim_invisible(value).split()
    while words and _glue(words[0]):
        words.pop(0)
    while words and _glue(words[-1]):
        words.pop()
    return " ".join(words)


def _glue(word: str) -> bool:
    return all(ch in _GLUE or ch in _PIECE_EDGE for ch in word)


def symbols_in(pieces: list[str]) -> str:
    """The first symbols typed where a name would be (``???``, ``#$%``), or ``""``."""
    for piece in pieces:
        for word in trim_invisible(piece).split():
            word = trim_invisible(word)
            if len(word) < 2 or not all(unicodedata.category(ch)[0] in "PS" for ch in word):
                continue
            if all(ch in _GLUE for ch in word) or all(_emoji(ch) for ch in word):
                continue
            return word
    return ""


def _emoji(ch: str) -> bool:
    return unicodedata.category(ch) in ("So", "Sk", "Mn", "Cf") or ch == "\ufe0f"


def _strip_lead_in(piece: str) -> str:
    """The piece after its lead-in words (greetings, requests, ``new lead``-like nouns)."""
    pos, previous = 0, ""
    while True:
        match = LEAD_IN.match(piece, pos)
        if match is None or match.end() == pos:
            break
        kind = match.lastgroup or ""
        after = _AFTER_LEAD_IN.match(piece, match.end())
        end = after.end() if after else match.end()
        punctuated = any(not ch.isspace() for ch in piece[match.end() : end])
        if kind == "soft" and not punctuated:
            break
        if kind == "noun" and not (previous or punctuated):
            break
        if kind == "addressee" and previous not in ("greeting", "soft"):
            break
        if kind == "particle" and (previous != "request" or not match.group().islower()):
            break
        pos, previous = end, kind
    return piece[pos:]


def _starts_with_greeting(piece: str) -> bool:
    match = LEAD_IN.match(piece)
    if match is None or match.lastgroup not in ("greeting", "soft"):
        return False
    if match.lastgroup == "soft":  # "Ola, …" but not "Ola Nordmann, …"
        return not clean_piece(_strip_lead_in(piece + ","))
    return True


def _without_colon_prefix(piece: str, more_after: bool) -> str:
    """``new lead: Donna Moore`` → ``Donna Moore``: a short ``words:`` prefix before a name."""
    match = _PREFIX_COLON.search(piece)
    if match is None:
        return piece
    before, after = piece[: match.start()], piece[match.end() :]
    if len(before.split()) > 6 or not any(ch.isalpha() for ch in before):
        return piece
    if clean_piece(after) or more_after:
        return after
    return piece


def _strip_closing(piece: str) -> str:
    head, tail = piece[:-_CLOSING_WINDOW], piece[-_CLOSING_WINDOW:]
    match = CLOSING.search(tail)
    if match is not None:
        return head + tail[: match.start()]
    remark = _REMARK.search(tail)
    if remark is not None:
        letters = [ch for ch in remark.group(1) if ch.isalpha()]
        if letters and letters[0].islower():
            return head + tail[: remark.start()]
    return piece


def name_from(pieces: list[str]) -> str:
    """The name in what is left (``""`` if none): the pieces, trimmed, joined by ``, ``."""
    kept = [p for p in (clean_piece(p) for p in pieces) if p]
    previous: list[str] | None = None
    while kept and kept != previous:
        previous = list(kept)
        if len(kept) > 1 and _starts_with_greeting(kept[0]):
            kept.pop(0)
            continue
        first = clean_piece(_without_colon_prefix(_strip_lead_in(kept[0]), len(kept) > 1))
        if first:
            kept[0] = first
        else:
            kept.pop(0)
            continue
        last = clean_piece(_strip_closing(kept[-1]))
        if last:
            kept[-1] = last
        else:
            kept.pop()
    return ", ".join(kept)
