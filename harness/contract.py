"""The requirement catalog: a contract's numbered requirements and its approval rule."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from harness.errors import InputError
from harness.yamlfile import SourceFile, load_yaml


class Priority(StrEnum):
    MUST = "må"
    SHOULD = "bør"


class Category(StrEnum):
    FUNCTIONAL = "functional"
    CAPACITY = "capacity"
    INTEGRATION = "integration"
    SECURITY = "security"
    OPERATIONS = "operations"


class Severity(StrEnum):
    """Error class on failure, as in the state standard contracts (SSA)."""

    A = "A"  # kritisk
    B = "B"  # alvorlig
    C = "C"  # mindre alvorlig
    D = "D"  # kosmetisk


class VerifiedBy(BaseModel):
    """A requirement verified by other means than a test run: neither untested nor silently approved."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    method: Literal["document_review", "inspection", "demonstration", "operation_period"] = Field(
        description="How it is verified: document review, an inspection, a demonstration, the operation period"
    )
    where: str = Field(description="Where the verification is recorded, e.g. 'Godkjenningsprotokoll pkt. 4'")


class Requirement(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$", description="Requirement number, e.g. TA-3.1")
    title: str
    text: str = Field(description="The requirement as the contract words it")
    source: str = Field(description="Where in the contract documents it stands, e.g. 'Bilag 2, pkt. 3.1'")
    priority: Priority
    category: Category
    severity: Severity = Field(description="Error class a failure of this requirement gets (A-D)")
    verified_by: VerifiedBy | None = Field(
        None, description="Set when the requirement is verified by other means than a test run"
    )


class ApprovalRule(BaseModel):
    """When the delivery may be approved. Default: not while an A or B deviation is open."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    blocking: list[Severity] = Field(default=[Severity.A, Severity.B])
    require_tested: list[Priority] = Field(
        default=[Priority.MUST],
        description="Priorities whose requirements must all have been tested (or be marked `verified_by`) "
        "before approval; a run that leaves one untested is incomplete. Default [må]; [] relaxes it",
    )
    text: str = "Leveransen godkjennes ikke så lenge det finnes åpne avvik i kategori A eller B."


class ContractInfo(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    title: str
    customer: str
    supplier: str
    reference: str = ""
    system: str = ""


class Contract(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    contract: ContractInfo
    approval: ApprovalRule = ApprovalRule()
    requirements: list[Requirement]

    def get(self, req_id: str) -> Requirement | None:
        return next((r for r in self.requirements if r.id == req_id), None)

    @property
    def ids(self) -> list[str]:
        return [r.id for r in self.requirements]


def load_contract(path: Path) -> tuple[Contract, SourceFile]:
    src = load_yaml(path, "contract")
    contract = src.validate(Contract)
    seen: set[str] = set()
    for i, req in enumerate(contract.requirements):
        if req.id in seen:
            raise InputError(
                f"requirement id `{req.id}` appears twice",
                place=src.place("requirements", i, "id"),
                fix="give every requirement its own id",
            )
        seen.add(req.id)
    return contract, src


def find_contract(root: Path) -> Path:
    """The contract of this checkout: the single YAML file in fixtures/contract/."""
    files = sorted((root / "fixtures" / "contract").glob("*.yaml"))
    if len(files) != 1:
        raise InputError(
            f"expected one contract in fixtures/contract/, found {len(files)}",
            place=str(root / "fixtures" / "contract"),
            fix="keep exactly one contract file there, or pass --contract PATH",
        )
    return files[0]
