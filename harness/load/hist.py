"""HdrHistograms for load runs: the same precision as harness.metrics (1 ns .. 1 h, 3 significant
digits), encoded to travel from locust workers to the master, and merged there exactly (counts add up;
percentiles come from the merged histogram, never from averaging the workers' percentiles)."""

from __future__ import annotations

from collections.abc import Iterable

from hdrh.histogram import HdrHistogram

from harness.metrics import HIGHEST_NS, SIGNIFICANT_DIGITS


def new_histogram() -> HdrHistogram:
    return HdrHistogram(1, HIGHEST_NS, SIGNIFICANT_DIGITS)


def record(h: HdrHistogram, latency_ns: int) -> None:
    """Record one latency, clamped into the histogram's range as harness.metrics.Latency does."""
    h.record_value(max(1, min(int(latency_ns), HIGHEST_NS)))


def encode(h: HdrHistogram) -> str:
    """The histogram as compressed, base64 HdrHistogram V2 text (the format other HdrHistogram
    implementations read)."""
    data = h.encode()
    return data.decode("ascii") if isinstance(data, bytes) else str(data)


def decode(text: str) -> HdrHistogram:
    """An encoded histogram back; ValueError on text that is not one."""
    try:
        h = HdrHistogram.decode(text.encode("ascii"))
    except Exception as exc:  # hdrh raises assorted errors on junk
        raise ValueError(f"not an encoded HdrHistogram: {exc}") from None
    if h is None:
        raise ValueError("not an encoded HdrHistogram")
    return h


def merge(parts: Iterable[HdrHistogram | str]) -> HdrHistogram:
    """One histogram holding every sample of `parts` (exact: bucket counts add)."""
    total = new_histogram()
    for part in parts:
        h = decode(part) if isinstance(part, str) else part
        if h.get_total_count():
            total.add(h)
    return total


def summary_ms(h: HdrHistogram) -> dict[str, float | int | None]:
    """Count and percentiles in milliseconds, for progress lines and capacity files."""
    n = int(h.get_total_count())
    if not n:
        return {"count": 0, "p50": None, "p90": None, "p99": None, "p999": None, "max": None}
    out: dict[str, float | int | None] = {"count": n}
    names = {50.0: "p50", 90.0: "p90", 99.0: "p99", 99.9: "p999"}
    for pct, value in h.get_percentile_to_value_dict(list(names)).items():  # one pass over the buckets
        out[names[pct]] = round(value / 1e6, 3)
    out["max"] = round(h.get_max_value() / 1e6, 3)
    return out


__all__ = ["decode", "encode", "merge", "new_histogram", "record", "summary_ms"]
