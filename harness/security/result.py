"""What one security attempt showed: refused (as it must be) or accepted (a finding), and its evidence."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from harness.outcomes import Outcome


class CannotCheck(Exception):
    """vtlab could not make the attempt (its own TLS library cannot offer what the check needs, a canary
    alarm it needs as an oracle never arrived ...): a harness fault, never a pass and never a finding."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class CheckResult:
    """`outcome` is Outcome.REFUSED (the platform refused as it must) or Outcome.ACCEPTED (a finding).

    `request` says what vtlab sent (attempt, address, identity by name, TLS version offered ...),
    `refusal` what the platform answered (TLS alert, MQTT reason code, HTTP status, DC-09 reply, SIP status),
    `certificate` the platform's certificate details where a TLS handshake got that far. No secrets."""

    outcome: Outcome
    detail: str
    request: Mapping[str, Any] = field(default_factory=dict)
    refusal: Mapping[str, Any] | None = None
    certificate: Mapping[str, Any] | None = None

    @property
    def refused(self) -> bool:
        return self.outcome is Outcome.REFUSED

    def evidence(self) -> dict[str, Any]:
        out: dict[str, Any] = {"outcome": self.outcome.value, "detail": self.detail, "request": dict(self.request)}
        if self.refusal is not None:
            out["refusal"] = dict(self.refusal)
        if self.certificate is not None:
            out["certificate"] = dict(self.certificate)
        return out


def refused(
    detail: str,
    request: Mapping[str, Any],
    refusal: Mapping[str, Any] | None = None,
    certificate: Mapping[str, Any] | None = None,
) -> CheckResult:
    return CheckResult(Outcome.REFUSED, detail, request, refusal, certificate)


def accepted(
    detail: str,
    request: Mapping[str, Any],
    answer: Mapping[str, Any] | None = None,
    certificate: Mapping[str, Any] | None = None,
) -> CheckResult:
    return CheckResult(Outcome.ACCEPTED, detail, request, answer, certificate)
