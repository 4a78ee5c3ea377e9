"""Fault specs for the reference lab: a pure parser and a pure decision engine.

Spec grammar (comma separated, each key at most once, order free)::

    drop=P          probability an alarm is lost
    dup=P           probability an alarm is delivered twice
    delay=D         fixed extra delay for every alarm
    delay=D@P       extra delay D for a share P of alarms
    reorder=P       probability an alarm is held back and released right after the next one
    outage=D@T      no routing for D, starting T after routing started (one window)
    seed=N          seed of the deterministic random stream (default 0)

P is `0.03` or `3%`; D and T are durations: `250ms`, `30s`, `5m`, `2h`, decimals like `1.5s`.
Nothing here does I/O or reads a clock: `FaultPlan.decide(now_ns)` is given the time.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

from harness.errors import InputError, Place
from harness.units import DURATION_RE, format_duration, parse_duration, seconds_hint

__all__ = [
    "KNOWN_KEYS",
    "Decision",
    "FaultPlan",
    "FaultSpec",
    "format_duration",
    "parse_duration",
    "parse_faults",
]

KNOWN_KEYS = ("drop", "dup", "delay", "reorder", "outage", "seed")

_PROB_RE = re.compile(r"^\s*(?P<num>\d+(?:\.\d+)?(?:[eE][-+]?\d+)?|\.\d+)\s*(?P<pct>%?)\s*$")

PlaceLike = Place | str | None


def _fmt_prob(p: float) -> str:
    text = repr(p)
    return text.removesuffix(".0")


@dataclass(frozen=True, slots=True)
class FaultSpec:
    """A parsed fault spec. `str(spec)` gives the canonical spelling; parse(str(s)) == s."""

    drop: float = 0.0
    dup: float = 0.0
    delay_ns: int = 0
    delay_p: float = 1.0
    reorder: float = 0.0
    outage_ns: int = 0
    outage_at_ns: int = 0
    seed: int = 0

    @property
    def empty(self) -> bool:
        return self == FaultSpec(seed=self.seed)

    def __str__(self) -> str:
        parts: list[str] = []
        if self.drop:
            parts.append(f"drop={_fmt_prob(self.drop)}")
        if self.dup:
            parts.append(f"dup={_fmt_prob(self.dup)}")
        if self.delay_ns:
            d = format_duration(self.delay_ns)
            parts.append(f"delay={d}" if self.delay_p == 1.0 else f"delay={d}@{_fmt_prob(self.delay_p)}")
        if self.reorder:
            parts.append(f"reorder={_fmt_prob(self.reorder)}")
        if self.outage_ns:
            parts.append(f"outage={format_duration(self.outage_ns)}@{format_duration(self.outage_at_ns)}")
        if self.seed:
            parts.append(f"seed={self.seed}")
        return ",".join(parts)

    @classmethod
    def parse(cls, text: str, place: PlaceLike = "--fault") -> FaultSpec:
        return parse_faults(text, place)


def _parse_prob(key: str, text: str, place: PlaceLike) -> float:
    m = _PROB_RE.match(text)
    if not m:
        raise InputError(
            f"`{key}={text}`: `{text}` is not a probability",
            place=place,
            fix=f"write a number between 0 and 1 or a percentage, e.g. {key}=0.03 or {key}=3%",
        )
    value = float(m.group("num"))
    if m.group("pct"):
        value = value / 100
        shown = f"{m.group('num')}%"
        ok = "0% and 100%"
    else:
        shown = m.group("num")
        ok = "0 and 1"
    if not 0.0 <= value <= 1.0:
        raise InputError(
            f"`{key}={text}`: probability {shown} is outside {ok}",
            place=place,
            fix=f"write a probability between {ok}, e.g. {key}=0.03 or {key}=3%",
        )
    return value


def _parse_dur(key: str, text: str, place: PlaceLike) -> int:
    m = DURATION_RE.match(text)
    if m and not m.group("unit"):
        num = m.group("num")
        raise InputError(
            f"`{key}={text}` has no unit",
            place=place,
            fix=f"write {num}ms or {seconds_hint(num)}s",
        )
    try:
        return parse_duration(text, place)
    except InputError as e:
        raise InputError(f"`{key}={text}`: {e.problem}", place=place, fix=e.fix) from None


def parse_faults(text: str, place: PlaceLike = "--fault") -> FaultSpec:
    """Parse `drop=0.03,dup=1%,delay=400ms@0.1,reorder=0.02,outage=10s@30s,seed=7`.

    The empty string (or only whitespace) means no faults.
    """
    seen: set[str] = set()
    probs: dict[str, float] = {}
    durs: dict[str, int] = {}
    seed = 0
    for raw in text.split(","):
        item = raw.strip()
        if not item:
            if text.strip():
                raise InputError(
                    f"`{text}` has an empty item",
                    place=place,
                    fix="separate items with single commas, e.g. drop=0.03,dup=0.01",
                )
            continue
        key, eq, val = item.partition("=")
        key, val = key.strip(), val.strip()
        if not eq or not val:
            raise InputError(
                f"`{item}` has no value",
                place=place,
                fix=f"write key=value, e.g. {key or 'drop'}=0.03",
            )
        if key not in KNOWN_KEYS:
            raise InputError(
                f"unknown fault `{key}`",
                place=place,
                fix="use one of " + ", ".join(KNOWN_KEYS),
            )
        if key in seen:
            raise InputError(
                f"`{key}` is given twice",
                place=place,
                fix=f"keep one `{key}=...`",
            )
        seen.add(key)
        if key in ("drop", "dup", "reorder"):
            probs[key] = _parse_prob(key, val, place)
        elif key == "delay":
            d, at, p = val.partition("@")
            durs["delay"] = _parse_dur(key, d.strip(), place)
            probs["delay_p"] = _parse_prob(key, p.strip(), place) if at else 1.0
        elif key == "outage":
            d, at, t = val.partition("@")
            if not at:
                raise InputError(
                    f"`outage={val}` has no start time",
                    place=place,
                    fix=f"write outage={d.strip()}@30s (an outage of {d.strip()} starting 30s after routing starts)",
                )
            durs["outage"] = _parse_dur(key, d.strip(), place)
            durs["outage_at"] = _parse_dur(key, t.strip(), place)
        else:  # seed
            if not re.fullmatch(r"\d+", val):
                raise InputError(
                    f"`seed={val}` is not a whole number",
                    place=place,
                    fix="write a non-negative whole number, e.g. seed=7",
                )
            seed = int(val)
    return FaultSpec(
        drop=probs.get("drop", 0.0),
        dup=probs.get("dup", 0.0),
        delay_ns=durs.get("delay", 0),
        delay_p=probs.get("delay_p", 1.0) if durs.get("delay") else 1.0,
        reorder=probs.get("reorder", 0.0),
        outage_ns=durs.get("outage", 0),
        outage_at_ns=durs.get("outage_at", 0) if durs.get("outage") else 0,
        seed=seed,
    )


@dataclass(frozen=True, slots=True)
class Decision:
    """What to do with one alarm. `reason` is "outage" or "drop" when `drop` is true, else None."""

    drop: bool
    reason: str | None
    copies: int
    extra_delay_ns: int
    hold_for_reorder: bool


class FaultPlan:
    """Deterministic decisions for a spec. Each decide() consumes exactly four random draws,
    so the stream for alarm n does not depend on what was decided for earlier alarms.

    The outage window is measured from `start_ns` (given, or the first decide() call).
    """

    def __init__(self, spec: FaultSpec, start_ns: int | None = None) -> None:
        self.spec = spec
        self.start_ns = start_ns
        self._rng = random.Random(spec.seed)

    def start(self, now_ns: int) -> None:
        self.start_ns = now_ns

    def in_outage(self, now_ns: int) -> bool:
        if not self.spec.outage_ns:
            return False
        if self.start_ns is None:
            self.start_ns = now_ns
        begin = self.start_ns + self.spec.outage_at_ns
        return begin <= now_ns < begin + self.spec.outage_ns

    def decide(self, now_ns: int) -> Decision:
        s = self.spec
        r_drop, r_dup, r_delay, r_reorder = (self._rng.random() for _ in range(4))
        if self.in_outage(now_ns):
            return Decision(True, "outage", 0, 0, False)
        if r_drop < s.drop:
            return Decision(True, "drop", 0, 0, False)
        copies = 2 if r_dup < s.dup else 1
        delay = s.delay_ns if s.delay_ns and r_delay < s.delay_p else 0
        hold = r_reorder < s.reorder
        return Decision(False, None, copies, delay, hold)
