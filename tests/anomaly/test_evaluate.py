from datetime import UTC, datetime

from click.testing import CliRunner

from flowforge_pipeline.anomaly.evaluate import evaluate
from flowforge_pipeline.cli import cli

# A reduced but honest window: three busy UTC hours, about 25 injections per type, and the
# same hours again without injections (different seed) for the false-alert rate.
T0 = datetime(2026, 11, 25, 13, 0, tzinfo=UTC)
T1 = datetime(2026, 11, 25, 16, 0, tzinfo=UTC)


def test_precision_recall_and_delay_on_labeled_backfill() -> None:
    r = evaluate(7, T0, T1, rate_per_hour=60.0, clean_seed=8)
    rec, prec = r["recall"], r["precision"]
    assert all(v["labels"] >= 15 for v in rec.values())
    for kind in ("spread_blowout", "price_jump", "fat_finger", "crossed_book", "stale_quote",
                 "volume_burst"):
        assert prec[kind]["precision"] >= 0.9, (kind, prec[kind])
    for kind in ("price_jump", "fat_finger", "crossed_book", "stale_quote", "volume_burst"):
        assert rec[kind]["recall"] >= 0.9, (kind, rec[kind])
    for kind in ("spread_blowout", "price_jump", "fat_finger", "crossed_book", "volume_burst"):
        assert rec[kind]["median_delay_s"] <= 5.0, (kind, rec[kind])
    for kind in ("spread_blowout", "price_jump", "fat_finger", "crossed_book"):
        assert rec[kind]["p95_delay_s"] <= 15.0, (kind, rec[kind])
    clean = r["clean"]["false_alerts_per_instrument_day"]
    assert clean["crossed_book"] == 0.0
    assert clean["fat_finger"] == 0.0
    assert clean["stale_quote"] <= 1.0
    assert clean["volume_burst"] <= 1.0


def test_bad_window_is_one_line_error() -> None:
    result = CliRunner().invoke(cli, ["anomaly", "evaluate", "--seed", "1", "--start",
                                      "2026-11-25T14:00Z", "--end", "2026-11-25T13:00Z"])
    assert result.exit_code == 2
    assert "END must be after START" in result.output
