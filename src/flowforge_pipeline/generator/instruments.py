"""The instrument universe, read from the one versioned reference file `instruments.csv`.

The same file is the dbt seed behind `dim_instruments`, so its columns are exactly the
contract's `dim_instruments` columns without `built_at`; everything else the simulation needs
(decimals, trading days, a stable per-symbol random key) is derived here, never stored twice.
"""

from __future__ import annotations

import csv
import zlib
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from functools import cached_property
from importlib import resources
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo

from flowforge_pipeline.contract.catalog import DIM_INSTRUMENTS

AssetClass = Literal["equity", "fx", "crypto"]

#: Columns of the reference file, in order: the contract's dim_instruments minus built_at.
CSV_COLUMNS: tuple[str, ...] = tuple(
    c.name for c in DIM_INSTRUMENTS.columns if c.name != "built_at"
)

#: Weekdays (Monday = 0) an asset class trades: equities and FX close at the weekend.
_TRADING_WEEKDAYS: dict[str, frozenset[int]] = {
    "equity": frozenset(range(5)),
    "fx": frozenset(range(5)),
    "crypto": frozenset(range(7)),
}
#: Trading days per year used to annualize volatility, per asset class.
_DAYS_PER_YEAR: dict[str, int] = {"equity": 252, "fx": 260, "crypto": 365}


class InstrumentFileError(ValueError):
    """The reference file is malformed; the message names the row and column."""


def _decimals(step: str) -> int:
    exponent = Decimal(step).normalize().as_tuple().exponent
    return max(0, -int(exponent))


@dataclass(frozen=True)
class Instrument:
    """One row of the reference file plus what the simulation derives from it."""

    symbol: str
    name: str
    asset_class: AssetClass
    venue: str
    currency: str
    tick_size: float
    lot_size: float
    reference_price: float
    annual_volatility: float
    session_timezone: str
    session_open: str
    session_close: str
    price_decimals: int
    size_decimals: int

    @property
    def key(self) -> int:
        """Stable 32-bit number of the symbol: random streams depend on it, not on file order.

        Adding or reordering rows therefore leaves every other instrument's stream unchanged.
        """
        return zlib.crc32(self.symbol.encode())

    @property
    def is_24h(self) -> bool:
        """True for instruments without a daily session (FX and crypto)."""
        return self.session_open == "00:00" and self.session_close == "24:00"

    @cached_property
    def minutes_per_year(self) -> int:
        """Trading minutes per year: the unit the volatility is annualized with."""
        return _DAYS_PER_YEAR[self.asset_class] * self.session_minutes

    @property
    def session_minutes(self) -> int:
        """Length of one session in minutes."""
        oh, om = (int(x) for x in self.session_open.split(":"))
        ch, cm = (int(x) for x in self.session_close.split(":"))
        return (ch * 60 + cm) - (oh * 60 + om)

    def trades_on(self, day: date) -> bool:
        """Whether the instrument trades on a (local) calendar day."""
        return day.weekday() in _TRADING_WEEKDAYS[self.asset_class]

    def sessions_utc(self, day: date) -> list[tuple[int, int, int]]:
        """Open minutes of UTC `day` as (lo, hi, open) minute offsets from 00:00 UTC.

        [lo, hi) is the part of a session inside the UTC day and `open` the session's own
        opening minute (negative when it opened the day before): a session in another timezone
        can straddle UTC midnight, so the local sessions of the neighbouring days count too.
        """
        if self.is_24h:
            return [(0, 1440, 0)] if self.trades_on(day) else []
        tz = ZoneInfo(self.session_timezone)
        day_start = datetime.combine(day, time(0), tzinfo=ZoneInfo("UTC"))
        oh, om = (int(x) for x in self.session_open.split(":"))
        out: list[tuple[int, int, int]] = []
        for shift in (-1, 0, 1):
            local = day + timedelta(days=shift)
            if not self.trades_on(local):
                continue
            opened = datetime.combine(local, time(oh, om), tzinfo=tz)
            start = int((opened - day_start).total_seconds() // 60)
            end = start + self.session_minutes
            lo, hi = max(start, 0), min(end, 1440)
            if lo < hi:
                out.append((lo, hi, start))
        return out


def _parse_row(row: dict[str, str], line: int) -> Instrument:
    def number(col: str) -> float:
        try:
            value = float(row[col])
        except ValueError:
            raise InstrumentFileError(f"line {line}: {col} is not a number: {row[col]!r}") from None
        if value <= 0:
            raise InstrumentFileError(f"line {line}: {col} must be > 0")
        return value

    asset = row["asset_class"]
    if asset not in _TRADING_WEEKDAYS:
        raise InstrumentFileError(f"line {line}: asset_class must be equity, fx or crypto")
    try:
        ZoneInfo(row["session_timezone"])
    except (KeyError, ValueError):
        raise InstrumentFileError(f"line {line}: unknown session_timezone") from None
    inst = Instrument(
        symbol=row["symbol"],
        name=row["name"],
        asset_class=asset,  # type: ignore[arg-type]
        venue=row["venue"],
        currency=row["currency"],
        tick_size=number("tick_size"),
        lot_size=number("lot_size"),
        reference_price=number("reference_price"),
        annual_volatility=number("annual_volatility"),
        session_timezone=row["session_timezone"],
        session_open=row["session_open"],
        session_close=row["session_close"],
        price_decimals=_decimals(row["tick_size"]),
        size_decimals=_decimals(row["lot_size"]),
    )
    if not 0 < inst.session_minutes <= 1440:
        raise InstrumentFileError(f"line {line}: session_close must be after session_open")
    return inst


def default_path() -> Path:
    """Path of the packaged reference file (also the dbt seed for `dim_instruments`)."""
    return Path(str(resources.files("flowforge_pipeline.generator") / "instruments.csv"))


def load_instruments(path: Path | None = None) -> tuple[Instrument, ...]:
    """Read and validate the reference file; fail with the offending line and column."""
    path = path or default_path()
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        if tuple(reader.fieldnames or ()) != CSV_COLUMNS:
            raise InstrumentFileError(f"{path}: header must be {','.join(CSV_COLUMNS)}")
        instruments = tuple(_parse_row(row, n) for n, row in enumerate(reader, start=2))
    symbols = [i.symbol for i in instruments]
    if len(set(symbols)) != len(symbols):
        raise InstrumentFileError(f"{path}: duplicate symbol")
    if not instruments:
        raise InstrumentFileError(f"{path}: no instruments")
    return instruments
