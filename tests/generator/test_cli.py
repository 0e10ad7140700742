"""Command-line behaviour: one-line errors naming the option, and `up`'s argv builder."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from click.testing import CliRunner

from flowforge_pipeline.cli import cli
from flowforge_pipeline.generator.cli import generate, generate_argv


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--backfill", "yesterday", "2026-01-02"], "--backfill START"),
        (["--backfill", "2026-01-02", "2026-01-01"], "--backfill"),
        (["--speed", "0"], "--speed"),
        (["--seed", "x"], "--seed"),
        (["--trades-per-second", "-1"], "--trades-per-second"),
        (["--anomalies", "--anomaly-types", "spread_blowout,meteor"], "--anomaly-types"),
        (["--heartbeat-seconds", "7"], "--heartbeat-seconds"),
        (["--backfill", "2026-01-01", "2026-01-02", "--start", "2026-01-01"], "--backfill"),
    ],
)
def test_bad_input_is_one_line_naming_the_option(args: list[str], named: str) -> None:
    result = CliRunner().invoke(cli, ["generate", *args, "--output", "-"])
    assert result.exit_code != 0
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert named in lines[0]


def test_generate_argv_round_trips_through_the_command() -> None:
    argv = generate_argv(
        seed=9,
        trades_per_second=100.0,
        backfill=(datetime(2026, 1, 5, tzinfo=UTC), "2026-01-06"),
        anomalies=True,
        anomaly_rate=5.0,
        anomaly_severity="high",
        anomaly_types=["crossed_book", "fat_finger"],
    )
    assert argv[0] == "generate"
    ctx = generate.make_context("generate", argv[1:])
    assert ctx.params["seed"] == 9
    assert ctx.params["trades_per_second"] == 100.0
    assert ctx.params["backfill"] == ("2026-01-05T00:00:00Z", "2026-01-06")
    assert ctx.params["anomalies"] is True
    assert ctx.params["anomaly_rate"] == 5.0
    assert ctx.params["anomaly_severity"] == "high"
    assert ctx.params["anomaly_types"] == "crossed_book,fat_finger"
    assert generate_argv() == ["generate"]


def test_generate_argv_refuses_naive_datetimes() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        generate_argv(start=datetime(2026, 1, 5))  # noqa: DTZ001 - the point of the test
