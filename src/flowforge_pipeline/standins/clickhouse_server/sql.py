"""Just enough SQL lexing to route a request the way ClickHouse's HTTP handler does.

The server never rewrites a query; it only has to find where an INSERT's inline data begins
(`FORMAT <name>` or `VALUES`), whether a text holds more than one statement, and which output
format a statement names. A keyword inside a string, a quoted identifier, a comment or a
`$tag$...$tag$` literal must never count, or binary data would be cut in the wrong place.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from enum import Enum
from functools import lru_cache


class TokenKind(Enum):
    """Lexical classes the router distinguishes."""

    WORD = "word"
    STRING = "string"
    QUOTED_NAME = "quoted_name"
    NUMBER = "number"
    PUNCT = "punct"


@dataclass(frozen=True)
class Token:
    """One token: its class, its text and where it starts and ends in the source."""

    kind: TokenKind
    text: str
    start: int
    end: int


class IncompleteInput(ValueError):
    """The text ends inside a token; the caller should read more of the body."""


_WORD_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")


def _skip_quoted(text: str, pos: int, quote: str) -> int:
    """Return the index after the closing quote, honouring backslash and doubled quotes."""
    i = pos + 1
    n = len(text)
    while i < n:
        ch = text[i]
        if ch == "\\":
            i += 2
            continue
        if ch == quote:
            if i + 1 < n and text[i + 1] == quote:
                i += 2
                continue
            return i + 1
        i += 1
    raise IncompleteInput("unterminated quoted text")


def _heredoc_tag(text: str, pos: int) -> str | None:
    """Return `$tag$` when a dollar-quoted literal starts at `pos`, else None."""
    end = text.find("$", pos + 1)
    if end == -1:
        return None
    tag = text[pos : end + 1]
    inner = tag[1:-1]
    if inner and (not all(c in _WORD_CHARS for c in inner) or inner[0].isdigit()):
        return None
    return tag


def tokens(text: str, start: int = 0) -> Iterator[Token]:
    """Yield the tokens of `text`, skipping whitespace and comments.

    Raises:
        IncompleteInput: the text ends inside a string, quoted name or comment.

    """
    i = start
    n = len(text)
    while i < n:
        ch = text[i]
        if ch in " \t\r\n\f\v":
            i += 1
        elif text.startswith("--", i) or text.startswith(("#!", "# "), i):
            nl = text.find("\n", i)
            if nl == -1:
                raise IncompleteInput("comment runs to the end of the text")
            i = nl + 1
        elif ch == "/" and text.startswith("/*", i):
            depth = 0
            j = i
            while True:
                opening = text.find("/*", j)
                closing = text.find("*/", j)
                if closing == -1:
                    raise IncompleteInput("unterminated comment")
                if opening != -1 and opening < closing:
                    depth += 1
                    j = opening + 2
                else:
                    depth -= 1
                    j = closing + 2
                    if depth == 0:
                        break
            i = j
        elif ch == "'":
            end = _skip_quoted(text, i, "'")
            yield Token(TokenKind.STRING, text[i:end], i, end)
            i = end
        elif ch in '"`':
            end = _skip_quoted(text, i, ch)
            yield Token(TokenKind.QUOTED_NAME, text[i:end], i, end)
            i = end
        elif ch == "$" and (tag := _heredoc_tag(text, i)) is not None:
            close = text.find(tag, i + len(tag))
            if close == -1:
                raise IncompleteInput("unterminated $tag$ literal")
            end = close + len(tag)
            yield Token(TokenKind.STRING, text[i:end], i, end)
            i = end
        elif ch in _WORD_CHARS:
            j = i + 1
            while j < n and text[j] in _WORD_CHARS:
                j += 1
            kind = TokenKind.NUMBER if ch.isdigit() else TokenKind.WORD
            yield Token(kind, text[i:j], i, j)
            i = j
        else:
            yield Token(TokenKind.PUNCT, ch, i, i + 1)
            i += 1


@dataclass(frozen=True)
class InsertSplit:
    """An INSERT whose data follows the statement: hand `statement` and `fmt` to the engine.

    Attributes:
        statement: the INSERT without its FORMAT clause or data, e.g. `INSERT INTO t (a, b)`.
        fmt: the input format of the data (`Values` for a VALUES insert).
        data_offset: where the data starts in the text that was split.
        has_settings: the statement carries its own `SETTINGS` clause.

    """

    statement: str
    fmt: str
    data_offset: int
    has_settings: bool = False


def _is_word(tok: Token, *words: str) -> bool:
    return tok.kind is TokenKind.WORD and tok.text.upper() in words


def find_insert_data(text: str, at_eof: bool) -> InsertSplit | None:
    """Find where an INSERT's inline data begins, as ClickHouse's parser does.

    Data starts after `FORMAT <name>`, then spaces and tabs, then at most one newline; for
    `VALUES` it starts at the keyword's end. An `INSERT ... SELECT` has no inline data.

    Args:
        text: the query text seen so far (URL `query`, a newline, then the body's start).
        at_eof: True when `text` is the whole request; otherwise more may follow.

    Returns:
        The split, or None when the statement is not an INSERT with inline data.

    Raises:
        IncompleteInput: the split cannot be decided yet; read more and call again.

    """
    toks = tokens(text)
    first = next(toks, None)
    if first is None or (first.end == len(text) and not at_eof):
        if at_eof:
            return None
        raise IncompleteInput("first keyword not complete yet")
    if not _is_word(first, "INSERT"):
        return None
    depth = 0
    has_settings = False
    for tok in toks:
        if tok.kind is TokenKind.PUNCT:
            if tok.text == "(":
                depth += 1
            elif tok.text == ")":
                depth -= 1
            continue
        if depth != 0 or tok.kind is not TokenKind.WORD:
            continue
        if tok.end == len(text) and not at_eof:
            # `with` may be the start of `withdrawn`: a word cut by the end decides nothing.
            raise IncompleteInput("keyword not complete yet")
        word = tok.text.upper()
        if word in ("SELECT", "WITH"):
            return None
        if word == "SETTINGS":
            has_settings = True
        if word == "VALUES":
            return InsertSplit(text[: tok.start].rstrip(), "Values", tok.end, has_settings)
        if word == "FORMAT":
            name = next(toks, None)
            if name is None or (name.end == len(text) and not at_eof):
                raise IncompleteInput("format name not complete yet")
            if name.kind not in (TokenKind.WORD, TokenKind.QUOTED_NAME):
                return None
            pos = name.end
            while pos < len(text) and text[pos] in " \t\f":
                pos += 1
            if pos < len(text) and text[pos] == "\r":
                pos += 1
            if pos < len(text) and text[pos] == "\n":
                pos += 1
            elif pos == len(text) and not at_eof:
                raise IncompleteInput("data start not seen yet")
            fmt = name.text.strip('`"')
            return InsertSplit(text[: tok.start].rstrip(), fmt, pos, has_settings)
    if not at_eof:
        raise IncompleteInput("INSERT statement not complete yet")
    return None


@dataclass(frozen=True)
class Statement:
    """What the router needs to know about a non-insert query text."""

    first_word: str
    second_word: str
    output_format: str | None
    statement_count: int
    error_position: int
    #: Where the first statement's own top-level `FORMAT` clause starts (-1: none).
    format_position: int = -1
    #: Where the first statement's last token ends (before any `;`).
    end_position: int = 0
    #: Whether the first statement already names an `INTO OUTFILE`.
    has_outfile: bool = False


def analyse(text: str) -> Statement:
    """Classify a query text: leading keywords, trailing `FORMAT`, number of statements.

    An unterminated literal is left for the engine to report with its own syntax error, so
    this never raises.
    """
    words: list[str] = []
    output_format: str | None = None
    count = 0
    in_statement = False
    error_position = -1
    prev_format = False
    depth = 0
    format_position = -1
    format_candidate = -1
    end_position = 0
    has_outfile = False
    try:
        for tok in tokens(text):
            if tok.kind is TokenKind.PUNCT and tok.text == ";":
                if in_statement:
                    count += 1
                in_statement = False
                prev_format = False
                continue
            if not in_statement:
                in_statement = True
                if count >= 1 and error_position < 0:
                    error_position = tok.start
            if count == 0 and len(words) < 2 and tok.kind is TokenKind.WORD:
                words.append(tok.text.upper())
            if tok.kind is TokenKind.PUNCT and tok.text in "([":
                depth += 1
            elif tok.kind is TokenKind.PUNCT and tok.text in ")]":
                depth -= 1
            if count == 0:
                end_position = tok.end
                if prev_format and tok.kind in (TokenKind.WORD, TokenKind.QUOTED_NAME):
                    output_format = tok.text.strip('`"')
                    format_position = format_candidate
                prev_format = depth == 0 and _is_word(tok, "FORMAT")
                if prev_format:
                    format_candidate = tok.start
                elif depth == 0 and _is_word(tok, "OUTFILE"):
                    has_outfile = True
    except IncompleteInput:
        pass
    if in_statement:
        count += 1
    while len(words) < 2:
        words.append("")
    return Statement(
        words[0],
        words[1],
        output_format,
        count,
        error_position,
        format_position,
        end_position,
        has_outfile,
    )


def with_output_file(text: str, stmt: Statement, path: str, marker: str = "") -> str:
    """`text` with `INTO OUTFILE 'path' TRUNCATE` where ClickHouse's grammar puts it.

    That is just before the statement's own `FORMAT` clause, or after its last token (its
    `SETTINGS` clause, if any, belongs to the query and stays in front). The clause goes on
    a line of its own, so a trailing `--` comment cannot swallow it. A `marker` (letters and
    digits) goes into a comment after it, so the query can be found in `system.processes`.
    """
    at = stmt.format_position if stmt.format_position >= 0 else stmt.end_position
    quoted = path.replace("\\", "\\\\").replace("'", "\\'")
    note = f" /* {marker} */" if marker.isalnum() else ""
    return f"{text[:at]}\nINTO OUTFILE '{quoted}' TRUNCATE{note}\n{text[at:]}"


@lru_cache(maxsize=1024)
def _analyse_short(text: str) -> Statement:
    return analyse(text)


def analyse_once(text: str) -> Statement:
    """`analyse`, remembered for short texts: clients send the same statements again and again."""
    return _analyse_short(text) if len(text) <= 4096 else analyse(text)


ACCESS_CONTROL_STARTS = frozenset(
    {
        ("CREATE", "USER"),
        ("ALTER", "USER"),
        ("DROP", "USER"),
        ("CREATE", "ROLE"),
        ("ALTER", "ROLE"),
        ("DROP", "ROLE"),
        ("CREATE", "QUOTA"),
        ("ALTER", "QUOTA"),
        ("DROP", "QUOTA"),
        ("CREATE", "ROW"),
        ("ALTER", "ROW"),
        ("DROP", "ROW"),
        ("CREATE", "POLICY"),
        ("ALTER", "POLICY"),
        ("DROP", "POLICY"),
        ("CREATE", "SETTINGS"),
        ("ALTER", "SETTINGS"),
        ("DROP", "SETTINGS"),
        ("CREATE", "PROFILE"),
        ("ALTER", "PROFILE"),
        ("DROP", "PROFILE"),
        ("SET", "ROLE"),
        ("SET", "DEFAULT"),
    }
)


def is_access_control(stmt: Statement) -> bool:
    """True for statements that manage users, roles, grants, quotas or policies."""
    if stmt.first_word in ("GRANT", "REVOKE"):
        return True
    return (stmt.first_word, stmt.second_word) in ACCESS_CONTROL_STARTS


def is_plain_describe(text: str) -> bool:
    """True for `DESC[RIBE] [TABLE] name[.name] [FORMAT f]` and nothing else.

    Such a statement's answer depends only on the table's definition (and the request's
    database, settings and session), so the server may answer it again from memory until any
    statement that can change a definition runs. Table functions, subqueries, SETTINGS
    clauses and anything else that could read outside state never qualify.
    """
    try:
        toks = list(tokens(text))
    except IncompleteInput:
        return False
    if toks and toks[-1].kind is TokenKind.PUNCT and toks[-1].text == ";":
        toks.pop()
    if not toks or not _is_word(toks[0], "DESCRIBE", "DESC"):
        return False
    i = 1
    if i < len(toks) and _is_word(toks[i], "TABLE"):
        i += 1
    names = (TokenKind.WORD, TokenKind.QUOTED_NAME)
    if i >= len(toks) or toks[i].kind not in names or _is_word(toks[i], "FORMAT"):
        return False
    i += 1
    if i + 1 < len(toks) and toks[i].text == "." and toks[i + 1].kind in names:
        i += 2
    if i + 1 < len(toks) and _is_word(toks[i], "FORMAT") and toks[i + 1].kind in names:
        i += 2
    return i == len(toks)
