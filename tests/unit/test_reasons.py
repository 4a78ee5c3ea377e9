"""Every reason a verdict can have is worded in both report languages from its code, never translated
from English prose (the signed Norwegian report had English reasons in it)."""

from __future__ import annotations

import pytest

from harness.acceptance import reason_text
from harness.outcomes import Reason, ReasonCode
from harness.report.i18n import Lang


@pytest.mark.parametrize("code", list(ReasonCode))
def test_each_reason_code_is_worded_in_norwegian_and_english(code: ReasonCode) -> None:
    reason = Reason(code, ("AVVIK-001 (A)", "TA-1.1"), ("A", "B"), ("AVVIK-002",))
    data = reason.to_json()
    assert Reason.from_json(data) == reason
    nb, en = Lang("nb").reason(data), Lang("en").reason(data)
    assert nb and en and nb != en
    english_words = {"the ", "scenario(s) did", "requirement", "deviation", "retested", "not tested"}
    assert not any(w in nb for w in english_words), nb
    assert reason_text(reason)  # the terminal's English text exists too
    from harness.report.i18n import REASONS

    if "{items}" in REASONS["nb"][code.value]:
        assert "TA-1.1" in nb and "TA-1.1" in en
