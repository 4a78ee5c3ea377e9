"""Fixtures shared by vtlab's own tests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import settings

from tests.helpers import Suite

# In CI every run explores the same examples (a landing must not depend on luck); on a developer's
# machine each run explores new ones, which is where new failures are found and then kept as cases.
settings.register_profile("ci", derandomize=True, database=None, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")


@pytest.fixture
def suite(tmp_path: Path) -> Suite:
    return Suite(tmp_path)
