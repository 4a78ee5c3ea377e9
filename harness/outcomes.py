"""The words of a verdict as types: what happened to an expectation, a scenario, a requirement, a run,
and why a run got its verdict. Values are the strings stored in evidence and summary.json."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Outcome(StrEnum):
    """What happened to one expectation (a row of the `matches` table)."""

    OK = "ok"
    LATE = "late"  # arrived after the step's `within`
    ALTERED = "altered"  # arrived where it should, with event, code or priority changed
    MISROUTED = "misrouted"  # arrived at the wrong centre, or for the wrong user or device
    LOST = "lost"  # never arrived anywhere vtlab observes
    AMBIGUOUS = "ambiguous"  # an arrival that matches more than one stimulus: not guessed
    NOT_REACHED = "not_reached"  # an earlier step of the repetition failed, so this one was not tried
    ACCEPTED = "accepted"  # the platform accepted what it must refuse (security)
    REFUSED = "refused"  # the platform refused as it must (security)
    UNEXPECTED = "unexpected"  # an alarm arrived where the contract says none must (expect_no_alarm)

    @property
    def arrived_in_place(self) -> bool:
        """Delivered to the right place (possibly late or changed): counts towards throughput."""
        return self in (Outcome.OK, Outcome.LATE, Outcome.ALTERED)

    @property
    def censored(self) -> bool:
        """A latency sample above any limit: the alarm did not arrive in place in time (DESIGN.md)."""
        return self in (Outcome.LATE, Outcome.MISROUTED, Outcome.LOST, Outcome.AMBIGUOUS, Outcome.NOT_REACHED)


class ScenarioStatus(StrEnum):
    RUNNING = "running"
    COMPLETED = "completed"
    ERROR = "error"  # vtlab could not run it (bad target, a crash)
    HARNESS_FAULT = "harness_fault"  # vtlab's own part failed during it: its figures are not the supplier's
    SKIPPED = "skipped"

    @property
    def unfinished(self) -> bool:
        return self in (ScenarioStatus.RUNNING, ScenarioStatus.ERROR, ScenarioStatus.HARNESS_FAULT)


class CriterionVerdict(StrEnum):
    PASS = "pass"
    MARGINAL = "marginal"
    FAIL = "fail"


class RequirementVerdict(StrEnum):
    PASS = "pass"
    MARGINAL = "marginal"
    FAIL = "fail"
    ERROR = "error"  # a covering scenario did not complete (harness fault or error): no verdict
    NOT_RUN = "not_run"  # the suite covers it, this run did not run it
    NOT_COVERED = "not_covered"  # no scenario covers it
    VERIFIED_OTHERWISE = "verified_otherwise"  # verified by review, inspection or the operation period

    @property
    def tested(self) -> bool:
        return self in (RequirementVerdict.PASS, RequirementVerdict.MARGINAL, RequirementVerdict.FAIL)


class RunVerdict(StrEnum):
    APPROVED = "approved"
    NOT_APPROVED = "not_approved"
    INCOMPLETE = "incomplete"


class ReasonCode(StrEnum):
    """Why a run got its verdict; each is worded in one place per language (report/i18n.py)."""

    RUN_NOT_FINISHED = "run_not_finished"
    SCENARIOS_UNFINISHED = "scenarios_unfinished"
    HARNESS_FAULT = "harness_fault"
    NO_SCENARIO = "no_scenario"
    OPEN_BLOCKING = "open_blocking"
    PART_NOT_RUN = "part_not_run"
    UNTESTED_REQUIRED = "untested_required"
    NO_OPEN_BLOCKING = "no_open_blocking"


@dataclass(frozen=True, slots=True)
class Reason:
    code: ReasonCode
    items: tuple[str, ...] = ()  # ids the reason names (deviations, scenarios, requirements)
    classes: tuple[str, ...] = ()  # the blocking classes of the approval rule
    retested: tuple[str, ...] = ()

    def to_json(self) -> dict[str, object]:
        return {"code": self.code.value, "items": list(self.items), "classes": list(self.classes),
                "retested": list(self.retested)}

    @classmethod
    def from_json(cls, d: dict[str, object]) -> Reason:
        def strs(key: str) -> tuple[str, ...]:
            v = d.get(key) or []
            return tuple(str(x) for x in v) if isinstance(v, list) else ()

        return cls(ReasonCode(str(d["code"])), strs("items"), strs("classes"), strs("retested"))
