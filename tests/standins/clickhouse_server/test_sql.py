"""The server's SQL routing: where an INSERT's data starts, which DESCRIBEs may be remembered."""

from __future__ import annotations

import pytest

from flowforge_pipeline.standins.clickhouse_server.sql import (
    IncompleteInput,
    find_insert_data,
    is_plain_describe,
)


def test_keyword_cut_by_the_end_of_what_arrived_decides_nothing() -> None:
    text = "INSERT INTO t (withdrawn, valuestamp) FORMAT CSV\n1,2\n"
    # Every prefix that ends inside the statement asks for more instead of guessing.
    for end in range(1, text.index("\n")):
        with pytest.raises(IncompleteInput):
            find_insert_data(text[:end], at_eof=False)
    split = find_insert_data(text, at_eof=False)
    assert split is not None
    assert (split.statement, split.fmt) == ("INSERT INTO t (withdrawn, valuestamp)", "CSV")
    assert text[split.data_offset :] == "1,2\n"


def test_insert_split_tells_whether_the_statement_has_its_own_settings() -> None:
    own = find_insert_data("INSERT INTO t SETTINGS max_threads = 4 FORMAT Native\n", False)
    none = find_insert_data("INSERT INTO t (a) /* SETTINGS */ FORMAT Native\n", False)
    values = find_insert_data("INSERT INTO t SETTINGS async_insert = 1 VALUES (1)", True)
    assert own is not None and own.has_settings
    assert none is not None and not none.has_settings
    assert values is not None and values.has_settings


@pytest.mark.parametrize(
    "text",
    [
        "DESCRIBE TABLE `b`\n FORMAT Native",
        "DESC t",
        "describe table db.t format TSV;",
        'DESCRIBE "my db"."my t"',
    ],
)
def test_plain_describe(text: str) -> None:
    assert is_plain_describe(text)


@pytest.mark.parametrize(
    "text",
    [
        "DESCRIBE TABLE file('x.csv')",
        "DESCRIBE (SELECT 1)",
        "DESCRIBE TABLE t SETTINGS describe_include_subcolumns = 1",
        "DESCRIBE TABLE t; DROP TABLE t",
        "DESCRIBE TABLE",
        "SELECT * FROM t",
        "DESCRIBE TABLE 't",
    ],
)
def test_not_plain_describe(text: str) -> None:
    assert not is_plain_describe(text)
