"""Answers the server may give again from memory, and exactly when they stop being valid.

clickhouse-connect asks `DESCRIBE TABLE t` before every insert, and every request's text is
classified by the engine before it runs. Both answers depend only on what they are keyed by,
so they are remembered:

- the engine's classification of a query text is a function of the text alone;
- a plain `DESCRIBE TABLE name` depends on the table's definition, the request's database,
  settings and format, and (for temporary tables and `SET`) the session's connection. Any
  statement that is not read-only (DDL, `SET`, `USE`, temporary tables, `SYSTEM`, ...) may
  change one of those, so it empties the cache before and after it runs, and a `DESCRIBE`
  that overlapped with such a statement is not remembered.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable
from dataclasses import dataclass

_MAX_ENTRIES = 1024


@dataclass(frozen=True)
class Answer:
    """A remembered result: its body and the figures of its X-ClickHouse-Summary."""

    body: bytes
    read_rows: int
    read_bytes: int
    result_rows: int
    result_bytes: int


class SchemaAnswers:
    """Remembered answers of plain `DESCRIBE TABLE` statements."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._answers: dict[Hashable, Answer] = {}
        self._generation = 0

    @property
    def generation(self) -> int:
        """Changes whenever a definition may have changed; read it before running a DESCRIBE."""
        return self._generation

    def get(self, key: Hashable) -> Answer | None:
        """The remembered answer for `key`, if any."""
        return self._answers.get(key)

    def put(self, key: Hashable, answer: Answer, generation: int) -> None:
        """Remember an answer computed while `generation` was current, if it still is."""
        with self._lock:
            if generation != self._generation:
                return
            if len(self._answers) >= _MAX_ENTRIES:
                self._answers.clear()
            self._answers[key] = answer

    def invalidate(self) -> None:
        """Forget everything: a definition, a setting or a session's state may change."""
        with self._lock:
            self._generation += 1
            self._answers.clear()


class Classifier:
    """The engine's query class of a text, computed once per distinct text."""

    def __init__(self) -> None:
        self._classes: dict[str, str] = {}

    def classify(self, sql: str, compute: Callable[[str], str]) -> str:
        """The class name (READ_ONLY, MUTATING, CONTROL, ...) of `sql`."""
        kind = self._classes.get(sql)
        if kind is None:
            kind = compute(sql)
            if len(sql) <= 4096:
                if len(self._classes) >= _MAX_ENTRIES:
                    self._classes.clear()
                self._classes[sql] = kind
        return kind
