"""Durations, rates and limits as people write them in files: `250ms`, `30s`, `5m`, `2/s`, `<= 30s`.

Inside, time is integer nanoseconds. Every parse error names the place and says what to write.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

from harness.errors import InputError, Place

_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*/\s*(s|m|h)\s*$", re.ASCII)

UNITS_NS = {
    "ns": 1,
    "us": 1_000,
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60_000_000_000,
    "h": 3_600_000_000_000,
}
DURATION_RE = re.compile(r"^\s*(?P<num>\d+(?:\.\d+)?|\.\d+)\s*(?P<unit>[a-zA-Z]*)\s*$", re.ASCII)
MAX_DIGITS = 24
"""Most digits a duration, rate or limit may have (enough for any nanosecond count, short of the
interpreter's limit on converting long digit strings, which would fail with an error naming no place)."""


def _too_many_digits(num: str, text: str, place: Place | str | None, what: str, example: str) -> None:
    if len(num) > MAX_DIGITS:
        raise InputError(
            f"`{text.strip()}` has {len(num)} digits, too many for {what}",
            place=place,
            fix=f"write at most {MAX_DIGITS} digits, e.g. {example}",
        )


def parse_duration(text: object, place: Place | str | None = None) -> int:
    """`250ms`, `30s`, `5m`, `2h`, `1.5s` -> nanoseconds (int). Raises InputError otherwise."""
    text = str(text)
    m = DURATION_RE.match(text)
    if not m:
        raise InputError(
            f"`{text}` is not a duration",
            place=place,
            fix="write a number with a unit, e.g. 250ms, 30s, 5m, 2h or 1.5s",
        )
    num, unit = m.group("num"), m.group("unit")
    _too_many_digits(num, text, place, "a duration", "250ms, 30s, 5m or 2h")
    if not unit:
        raise InputError(
            f"`{text.strip()}` has no unit",
            place=place,
            fix=f"write {num}ms or {seconds_hint(num)}s",
        )
    if unit not in UNITS_NS:
        raise InputError(
            f"`{text.strip()}` has an unknown unit `{unit}`",
            place=place,
            fix="use one of ms, s, m, h (e.g. 250ms, 30s, 5m, 2h)",
        )
    # exact decimal arithmetic: "1.5s" must be 1_500_000_000, not a float approximation
    whole, _, frac = num.partition(".")
    scale = UNITS_NS[unit]
    ns = int(whole or "0") * scale
    if frac:
        ns += int(frac) * scale // (10 ** len(frac))
    return ns


def seconds_hint(num: str) -> str:
    try:
        return f"{float(num) / 1000:g}"
    except ValueError:  # pragma: no cover - regex guarantees a number
        return num


def format_duration(ns: int) -> str:
    """Nanoseconds -> the shortest exact spelling (`2h`, `90s`, `1500ms`, `250us`)."""
    if ns == 0:
        return "0ms"
    for unit in ("h", "m", "s", "ms", "us"):
        if ns % UNITS_NS[unit] == 0:
            return f"{ns // UNITS_NS[unit]}{unit}"
    return f"{ns}ns"


def readable_duration(ns: float) -> str:
    """Readable duration with the unit a person would pick (`412.300ms`, `1.500s`)."""
    if ns >= 60_000_000_000:
        return f"{ns / 60_000_000_000:.2f}m"
    if ns >= 1_000_000_000:
        return f"{ns / 1_000_000_000:.3f}s"
    if ns >= 1_000_000:
        return f"{ns / 1_000_000:.3f}ms"
    return f"{ns / 1_000:.1f}us"


MAX_RATE_PER_S = 100_000.0


def parse_rate(text: object, place: Place | str | None = None) -> float:
    """`2/s` -> 2.0 per second; `30/m` -> 0.5 per second. Positive and at most 100 000/s."""
    m = _RATE.match(str(text))
    if not m:
        raise InputError(f"`{text}` is not a rate", place=place, fix="write events per unit time, e.g. 2/s, 30/m")
    _too_many_digits(m.group(1), str(text), place, "a rate", "10/s or 30/m")
    rate = float(m.group(1)) / {"s": 1, "m": 60, "h": 3600}[m.group(2)]
    if not 0 < rate <= MAX_RATE_PER_S:
        raise InputError(f"a rate of `{text}` is outside what a run can do (above 0, at most 100000/s)",
                         place=place, fix="write a positive rate, e.g. 10/s or 30/m")
    return rate


def parse_bounded_duration(text: object, place: Place | str | None = None, *, low_ns: int = 1,
                           high_ns: int = 24 * 3600 * 1_000_000_000, what: str = "a duration") -> int:
    """A duration that must lie in [low, high] (e.g. `within: 0s` or `within: 400h` is nonsense)."""
    ns = parse_duration(text, place)
    if not low_ns <= ns <= high_ns:
        raise InputError(f"{what} of `{text}` is outside {format_duration(low_ns)}..{format_duration(high_ns)}",
                         place=place, fix=f"write {what} between {format_duration(low_ns)} and "
                         f"{format_duration(high_ns)}")
    return ns


class Dimension(Enum):
    """What a metric measures, and so which units its limits take."""

    TIME = "time"  # nanoseconds; limits in ms, s ...
    COUNT = "count"  # whole events; limits bare, or with `alarms`
    RATIO = "ratio"  # fraction of stimuli; limits in %
    RATE = "rate"  # events per second; limits like 50/s


_OPS: dict[str, Callable[[float, float], bool]] = {
    "<=": operator.le,
    "<": operator.lt,
    ">=": operator.ge,
    ">": operator.gt,
    "==": operator.eq,
}
DISPLAY_UNITS = {Dimension.TIME: "ms", Dimension.COUNT: "count", Dimension.RATIO: "%", Dimension.RATE: "1/s"}
"""The unit each dimension is shown in (criteria, summary.json, the report)."""

_LIMIT = re.compile(r"^\s*(<=|>=|==|<|>)\s*(.+?)\s*$")


@dataclass(frozen=True, slots=True)
class Limit:
    """A comparison against a value in the metric's base unit (ns, count, fraction, 1/s)."""

    op: str
    value: float
    text: str

    def holds(self, measured: float) -> bool:
        return _OPS[self.op](measured, self.value)


def parse_limit(text: object, dimension: Dimension, place: Place | str | None = None) -> Limit:
    """`<= 30s` for a time metric, `== 0` for a count, `<= 0.1%` for a ratio, `>= 50/s` for a rate."""
    raw = str(text)
    m = _LIMIT.match(raw)
    if not m or isinstance(text, bool):
        raise InputError(
            f"`{raw}` is not a limit",
            place=place,
            fix="write a comparison and a value, e.g. \"<= 30s\", \"== 0\", \"<= 0.5%\" (quote it in YAML)",
        )
    op, value = m.group(1), m.group(2)
    if dimension is Dimension.TIME:
        if re.fullmatch(r"\d+(\.\d+)?", value, re.ASCII):
            raise InputError(
                f"limit `{raw}` has no unit",
                place=place,
                fix=f"say which unit: \"{op} {value}s\" or \"{op} {value}ms\"",
            )
        return Limit(op, float(parse_duration(value, place)), raw)
    if dimension is Dimension.COUNT:
        m2 = re.fullmatch(r"(\d+)(\s*alarms?)?", value, re.ASCII)
        if not m2:
            raise InputError(f"limit `{raw}` is not a count", place=place, fix=f"write a whole number: \"{op} 0\"")
        _too_many_digits(m2.group(1), raw, place, "a count", f'"{op} 0"')
        return Limit(op, float(m2.group(1)), raw)
    if dimension is Dimension.RATIO:
        m2 = re.fullmatch(r"(\d+(?:\.\d+)?)\s*%", value, re.ASCII)
        if not m2:
            raise InputError(
                f"limit `{raw}` is not a percentage", place=place, fix=f"write a share with %: \"{op} 0.5%\""
            )
        share = float(m2.group(1))
        if share > 100.0:
            raise InputError(f"limit `{raw}` is more than 100 %", place=place,
                             fix="a share of alarms lies between 0 % and 100 %")
        return Limit(op, share / 100.0, raw)
    return Limit(op, parse_rate(value, place), raw)
