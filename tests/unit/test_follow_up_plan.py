"""A user's follow-up plan (persona `thresholds:`): what the lab raises a follow-up alarm for, and the
mistakes a tester can make writing it."""

from __future__ import annotations

from decimal import Decimal

import pytest

from harness.errors import InputError
from harness.lab.config import ReadingLimits
from harness.labfile import Threshold


@pytest.mark.parametrize(("value", "unit", "beyond"), [
    ("160", "mmHg", False), ("160.01", "mmHg", True), ("182", "mmHg", True), ("89.9", "%", False),
    ("182", "kPa", False),  # another unit: not this rule's reading
])
def test_a_reading_is_beyond_the_plan_only_past_its_limit_in_its_unit(value: str, unit: str, beyond: bool) -> None:
    systolic = ReadingLimits(unit="mmHg", max=Decimal("160"))
    assert (systolic.beyond(Decimal(value), unit) is not None) is beyond


def test_a_low_limit_names_the_value_and_the_limit() -> None:
    spo2 = ReadingLimits(unit="%", min=Decimal("90"))
    assert spo2.beyond(Decimal("88"), "%") == "88 % < 90 %"
    assert spo2.beyond(Decimal("90"), "%") is None


@pytest.mark.parametrize("bad", [{"max": "160"}, {"max": "mmHg"}, {}, {"min": "90 %", "max": "200 mmHg"},
                                 {"max": "1e9 mmHg"}])
def test_a_threshold_without_value_or_unit_is_refused_with_a_fix(bad: dict[str, str]) -> None:
    with pytest.raises((InputError, ValueError)) as info:
        Threshold.model_validate(bad)
    assert "e.g." in str(info.value) or "unit" in str(info.value)
