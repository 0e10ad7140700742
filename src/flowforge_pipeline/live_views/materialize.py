"""Reading, rendering and applying the Materialize SQL in `materialize/`.

The files are the production definition of `live_quotes`, `live_positions` and `live_pnl`.
They are applied as written, in file order, with one substitution (the Kafka broker list,
inserted as a quoted literal). The view bodies are also what the equivalence test runs on
PostgreSQL, which is why they are parsed here rather than kept as strings in Python.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql

from flowforge_pipeline.settings import Settings, mask_url

#: The SQL files beside the package in the repository.
DEFAULT_SQL_DIR = Path(__file__).resolve().parents[3] / "materialize"
_VIEW = re.compile(
    r"^CREATE\s+(MATERIALIZED\s+)?VIEW\s+IF\s+NOT\s+EXISTS\s+(\w+)\s+AS\s+(.*)$",
    re.IGNORECASE | re.DOTALL,
)


class MaterializeError(RuntimeError):
    """The SQL could not be read or applied; the message names the file or the URL."""


@dataclass(frozen=True)
class View:
    """One `CREATE [MATERIALIZED] VIEW` of the SQL files."""

    name: str
    materialized: bool
    body: str


def sql_files(sql_dir: Path = DEFAULT_SQL_DIR) -> list[Path]:
    """The SQL files in apply order (their names start with a number)."""
    files = sorted(sql_dir.glob("*.sql"))
    if not files:
        raise MaterializeError(f"no .sql files in {sql_dir}")
    return files


def split_statements(text: str) -> list[str]:
    """Statements of a file: comment lines dropped, split on a ';' that ends a line."""
    lines = [ln for ln in text.splitlines() if not ln.lstrip().startswith("--")]
    parts = re.split(r";[ \t]*(?:\n|$)", "\n".join(lines))
    return [p.strip() for p in parts if p.strip()]


def render(statement: str, broker: str) -> str:
    """Insert the broker list as a quoted literal (the only parameter of the files)."""
    literal = "'" + broker.replace("'", "''") + "'"
    return statement.replace(":broker", literal)


def statements(settings: Settings, sql_dir: Path = DEFAULT_SQL_DIR) -> list[str]:
    """Every statement to apply, rendered for the configured broker."""
    out: list[str] = []
    for path in sql_files(sql_dir):
        out.extend(render(s, settings.kafka_servers) for s in split_statements(path.read_text()))
    return out


def views(sql_dir: Path = DEFAULT_SQL_DIR) -> list[View]:
    """The views in definition order (a view only reads sources and earlier views)."""
    out: list[View] = []
    for path in sql_files(sql_dir):
        for stmt in split_statements(path.read_text()):
            match = _VIEW.match(stmt)
            if match:
                out.append(View(match.group(2), bool(match.group(1)), match.group(3)))
    return out


def apply(settings: Settings, sql_dir: Path = DEFAULT_SQL_DIR) -> list[str]:
    """Run every statement against LIVE_VIEWS_URL, which must be Materialize.

    Plain PostgreSQL is refused up front: it has no Kafka sources, and locally the
    live-views flow keeps the tables current instead.

    Returns:
        The first line of each statement applied.

    Raises:
        MaterializeError: unreachable, not Materialize, or a statement failed (named).

    """
    todo = statements(settings, sql_dir)
    url = mask_url(settings.postgres)
    try:
        conn = psycopg.connect(settings.postgres, autocommit=True, connect_timeout=5)
    except psycopg.Error as exc:
        raise MaterializeError(f"materialize at {url} unreachable: {_first(exc)}") from None
    done: list[str] = []
    with conn:
        try:
            conn.execute("SELECT mz_version()")
        except psycopg.Error:
            raise MaterializeError(
                f"LIVE_VIEWS_URL {url} is not Materialize (no mz_version()); "
                "locally the live-views flow keeps these tables current"
            ) from None
        for stmt in todo:
            head = stmt.splitlines()[0]
            try:
                conn.execute(sql.SQL(stmt))  # noqa: S608 - trusted project files
            except psycopg.Error as exc:
                raise MaterializeError(f"{head!r} failed at {url}: {_first(exc)}") from None
            done.append(head)
    return done


def _first(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
