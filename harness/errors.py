"""User-facing errors: each names the place, what is wrong and what to write instead.

The CLI and the pytest plugin print these without a traceback and exit with status 2.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class Place:
    """A position in an input file (1-based line), or a named source such as the command line."""

    source: str
    line: int | None = None

    def __str__(self) -> str:
        return f"{self.source}:{self.line}" if self.line else self.source

    @classmethod
    def of(cls, path: str | Path, line: int | None = None) -> Place:
        return cls(str(path), line)


MAX_RUN = 160
"""Longest unbroken run of characters (a value, a path, a list item) an error message repeats in full."""
MAX_TEXT = 1200
"""Longest problem or fix text: a message quotes what was written, and what was written may be huge."""
_LONG_RUN = re.compile(rf"\S{{{MAX_RUN + 1},}}")


def bounded(text: str) -> str:
    """`text` with every very long unbroken run and the whole shortened, so that an error quoting a 100 kB
    value (or a list of such values) stays readable; the length left out is said."""

    def cut(m: re.Match[str]) -> str:
        run = m.group()
        return f"{run[:100]}...({len(run) - 120} more characters)...{run[-20:]}"

    text = _LONG_RUN.sub(cut, text)
    if len(text) > MAX_TEXT:
        text = f"{text[: MAX_TEXT - 60]}...({len(text) - MAX_TEXT + 60} more characters)"
    return text


class VtlabError(Exception):
    """Bad input or an unusable target. Message format: `place: problem. fix`."""

    exit_code = 2

    def __init__(self, problem: str, *, place: Place | str | None = None, fix: str | None = None):
        self.problem = bounded(problem)
        self.place = Place(place) if isinstance(place, str) else place
        self.fix = None if fix is None else bounded(fix)
        super().__init__(self.message)

    @property
    def message(self) -> str:
        text = f"{self.place}: {self.problem}" if self.place else self.problem
        if self.fix:
            text += f"\n  fix: {self.fix}"
        return text

    def __str__(self) -> str:
        return self.message


class InputError(VtlabError, ValueError):
    """A scenario, contract, lab or fault description that cannot be used as written.

    A ValueError too, so pydantic validators can raise it and the loader adds the file and line.
    """


class TargetError(VtlabError):
    """The system under test (or its broker) cannot be reached or used as the lab file says."""


class UnreachableError(TargetError):
    """Nothing answered at the address at all (connection refused, no route): not a refusal by the
    platform's security, and not evidence of anything the supplier did."""


def suggest(word: str, choices: Iterable[str]) -> str:
    """`did you mean ...? ` for a fix text, when one of `choices` is close to `word` (else empty)."""
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f"did you mean `{close[0]}`? " if close else ""
