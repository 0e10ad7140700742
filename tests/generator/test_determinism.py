"""Same seed and settings -> the same bytes, whatever the pacing, batch size or restart point."""

from __future__ import annotations

import hashlib
import json
from functools import partial
from pathlib import Path

from click.testing import CliRunner

from flowforge_pipeline.cli import cli
from flowforge_pipeline.generator import parallel
from flowforge_pipeline.generator.anomalies import KINDS, AnomalyOptions
from flowforge_pipeline.generator.cli import parse_time
from flowforge_pipeline.generator.instruments import load_instruments
from flowforge_pipeline.generator.producer import JsonLinesSink
from flowforge_pipeline.generator.tape import Tape, to_us

T0 = "2026-11-25T14:29:30Z"
T_MID = "2026-11-25T14:30:45.5Z"
T_END = "2026-11-25T14:32:00Z"
#: sha256 of the JSON lines of one minute, seed 1, default rates.
PINNED_SHA256 = "fc6f519954235dbc20b63a0f7892adf1fb72470c7121edbc48c89a8aaa173403"


def _generate(tmp_path: Path, name: str, *args: str) -> bytes:
    out = tmp_path / name
    result = CliRunner().invoke(cli, ["generate", *args, "--output", str(out)])
    assert result.exit_code == 0, result.output
    return out.read_bytes()


def test_backfill_and_accelerated_give_identical_bytes(tmp_path: Path) -> None:
    backfill = _generate(
        tmp_path, "a", "--seed", "3", "--backfill", T0, T_END, "--batch-size", "5000"
    )
    paced = _generate(
        tmp_path,
        "b",
        "--seed",
        "3",
        "--start",
        T0,
        "--duration",
        "150",
        "--speed",
        "5000",
        "--batch-size",
        "7",
    )
    assert backfill == paced
    assert len(backfill.splitlines()) > 1000


def test_restart_point_does_not_change_the_suffix(tmp_path: Path) -> None:
    whole = _generate(tmp_path, "a", "--seed", "3", "--backfill", T0, T_END).splitlines()
    tail = _generate(tmp_path, "b", "--seed", "3", "--backfill", T_MID, T_END).splitlines()
    assert 0 < len(tail) < len(whole)
    assert whole[-len(tail) :] == tail
    first = json.loads(tail[0])["value"]["event_time"]
    assert first >= "2026-11-25T14:30:45.500000Z"


def test_other_seed_gives_other_tape(tmp_path: Path) -> None:
    a = _generate(tmp_path, "a", "--seed", "3", "--backfill", T0, T_END)
    b = _generate(tmp_path, "b", "--seed", "4", "--backfill", T0, T_END)
    assert a != b


def test_pinned_sample_hash(tmp_path: Path) -> None:
    data = _generate(
        tmp_path,
        "a",
        "--seed",
        "1",
        "--trades-per-second",
        "10",
        "--quotes-per-second",
        "50",
        "--backfill",
        "2026-11-25T14:30Z",
        "2026-11-25T14:31Z",
    )
    assert hashlib.sha256(data).hexdigest() == PINNED_SHA256


def test_processes_taking_turns_give_identical_bytes(tmp_path: Path) -> None:
    """`--workers 3` through the command; two processes on one-minute blocks, so turns go round."""
    args = ("--seed", "3", "--backfill", T0, T_END, "--anomalies", "--anomaly-rate", "2000")
    alone = _generate(tmp_path, "a", *args)
    assert _generate(tmp_path, "b", *args, "--workers", "3") == alone

    tape = Tape(load_instruments(), 3, 10, 50, 10, AnomalyOptions(2000, "mixed", KINDS))
    start, end = to_us(parse_time(T0, "start")), to_us(parse_time(T_END, "end"))
    assert len(parallel.blocks(tape, start, end, 500)) == 3
    out = tmp_path / "c"
    out.write_text("")
    sink = partial(JsonLinesSink, str(out), True)
    counts = parallel.backfill(tape, start, end, sink, 2, batch_size=100, block_records=500)
    assert out.read_bytes() == alone
    assert counts.total == len(alone.splitlines())
