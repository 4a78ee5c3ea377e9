"""vtlab's own test tree: pytest imports test modules by base name (no packages), so two test files with the
same name in different folders stop the whole collection. This guards `python -m pytest` (the CI command)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]


def test_every_test_module_has_a_name_of_its_own() -> None:
    names = Counter(p.name for p in TESTS.rglob("test_*.py"))
    assert [n for n, c in names.items() if c > 1] == []
