"""Labeled anomalies: opt-in, labels only on ground_truth, each kind visible in the tape."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from flowforge_pipeline.cli import cli
from flowforge_pipeline.generator.anomalies import KINDS

RANGE = ("2026-11-25T14:00Z", "2026-11-25T15:00Z")


def _run(tmp_path: Path, *extra: str) -> list[dict[str, object]]:
    out = tmp_path / "tape.jsonl"
    result = CliRunner().invoke(
        cli,
        [
            "generate",
            "--seed",
            "11",
            "--trades-per-second",
            "20",
            "--quotes-per-second",
            "20",
            "--backfill",
            *RANGE,
            "--output",
            str(out),
            *extra,
        ],
    )
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in out.read_text().splitlines()]


def test_no_labels_and_no_crossed_quotes_by_default(tmp_path: Path) -> None:
    records = _run(tmp_path)
    assert not [r for r in records if r["topic"] == "ground_truth"]
    quotes = [r["value"] for r in records if r["topic"] == "quotes"]
    assert all(q["bid"] < q["ask"] for q in quotes)  # type: ignore[index]


def test_labels_go_to_ground_truth_only_and_show_in_the_tape(tmp_path: Path) -> None:
    records = _run(tmp_path, "--anomalies", "--anomaly-rate", "300")
    labels = [r["value"] for r in records if r["topic"] == "ground_truth"]
    assert {lab["type"] for lab in labels} == set(KINDS)  # type: ignore[index]
    for lab in labels:
        assert set(lab) == {
            "anomaly_id",
            "symbol",
            "type",
            "severity",
            "start_time",
            "end_time",
            "magnitude",
            "schema_version",
        }
        assert lab["severity"] in ("low", "medium", "high")  # type: ignore[index]
        assert lab["start_time"] <= lab["end_time"]  # type: ignore[index, operator]
    for r in records:
        if r["topic"] != "ground_truth":
            assert "anomaly_id" not in r["value"]  # type: ignore[operator]
    quotes = [r["value"] for r in records if r["topic"] == "quotes"]
    crossed = [q for q in quotes if q["bid"] >= q["ask"]]  # type: ignore[index, operator]
    crossed_labels = [lab for lab in labels if lab["type"] == "crossed_book"]  # type: ignore[index]
    assert len(crossed) == len(crossed_labels)
    assert {(q["symbol"], q["event_time"]) for q in crossed} == {  # type: ignore[index]
        (lab["symbol"], lab["start_time"])
        for lab in crossed_labels  # type: ignore[index]
    }
    trades = [r["value"] for r in records if r["value"].get("type") == "trade"]  # type: ignore[union-attr]
    fat = [lab for lab in labels if lab["type"] == "fat_finger"]  # type: ignore[index]
    fat_prints = {
        (t["symbol"], t["event_time"])
        for t in trades  # type: ignore[index]
        if str(t["trade_id"]).endswith("-t")
    }  # type: ignore[index]
    assert fat_prints == {(lab["symbol"], lab["start_time"]) for lab in fat}  # type: ignore[index]


def test_severity_option_is_respected(tmp_path: Path) -> None:
    records = _run(
        tmp_path,
        "--anomalies",
        "--anomaly-rate",
        "50",
        "--anomaly-severity",
        "high",
        "--anomaly-types",
        "spread_blowout",
    )
    labels = [r["value"] for r in records if r["topic"] == "ground_truth"]
    assert labels
    assert {(lab["type"], lab["severity"], lab["magnitude"]) for lab in labels} == {  # type: ignore[index]
        ("spread_blowout", "high", 16.0)
    }
