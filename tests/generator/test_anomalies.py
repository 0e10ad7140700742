"""Labeled anomalies: opt-in, labels only on ground_truth, each kind visible in the tape."""

from __future__ import annotations

import json
import math
from pathlib import Path

from click.testing import CliRunner

from flowforge_pipeline.cli import cli
from flowforge_pipeline.generator.anomalies import KINDS, MILDER_KINDS
from flowforge_pipeline.generator.instruments import load_instruments

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


def test_milder_grades_stay_below_the_severe_floor(tmp_path: Path) -> None:
    records = _run(tmp_path, "--anomalies", "--anomaly-rate", "200",
                   "--anomaly-severity", "milder")
    labels = [r["value"] for r in records if r["topic"] == "ground_truth"]
    assert {lab["type"] for lab in labels} == set(MILDER_KINDS)  # type: ignore[index]
    assert {lab["severity"] for lab in labels} == {"mild", "moderate"}  # type: ignore[index]
    # The severe grade starts at spread 3x, volume 5x, a jump of 8 one-minute sd (a jump's
    # magnitude is the signed log-price move).
    floor = {"spread_blowout": 3.0, "volume_burst": 5.0}
    by_symbol = {i.symbol: i for i in load_instruments()}
    for lab in labels:
        kind, size = str(lab["type"]), float(lab["magnitude"])  # type: ignore[index, arg-type]
        if kind in floor:
            assert 1.0 < size < floor[kind], lab
        else:
            inst = by_symbol[str(lab["symbol"])]  # type: ignore[index]
            one_minute_sd = inst.annual_volatility * math.sqrt(1.0 / inst.minutes_per_year)
            assert 3.0 < abs(size) / one_minute_sd < 8.0, lab


def test_a_kind_without_milder_grades_is_a_one_line_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        cli,
        ["generate", "--backfill", *RANGE, "--output", str(tmp_path / "x.jsonl"),
         "--anomalies", "--anomaly-severity", "mild", "--anomaly-types", "fat_finger"],
    )
    assert result.exit_code == 1
    assert "invalid --anomaly-types: fat_finger has no grade below severe" in result.output
    assert not (tmp_path / "x.jsonl").exists() or not (tmp_path / "x.jsonl").read_text()
