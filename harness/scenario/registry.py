"""The step registry: every step kind comes from a plugin through the `vtlab_steps` hook. (`device_models`
lives in harness.plugins and is re-exported here for the scenario layer.)"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pydantic import BaseModel

from harness.errors import suggest
from harness.plugins import device_models, plugin_manager

if TYPE_CHECKING:
    from harness.scenario.plan import ScenarioPlan, StepPlan
    from harness.scenario.runner import Iteration


__all__ = ["StepKind", "device_models", "step_kinds", "suggest"]


@dataclass(frozen=True, slots=True)
class StepKind:
    """A step users can write: its name, its argument model, and what it does.

    `check` runs at load time against the resolved scenario (devices, probes exist) so mistakes are
    reported at the step's line before anything runs. `metrics` names the time metrics it records.
    """

    name: str
    args: type[BaseModel]
    run: Callable[[Iteration, StepPlan], Awaitable[None]]
    check: Callable[[ScenarioPlan, StepPlan], None] | None = None
    metrics: Callable[[BaseModel], list[str]] | None = None

    @property
    def doc(self) -> str:
        return inspect.cleandoc(self.run.__doc__ or "")


@functools.cache
def step_kinds() -> dict[str, StepKind]:
    kinds: dict[str, StepKind] = {}
    for batch in plugin_manager().hook.vtlab_steps():
        for kind in batch:
            kinds[kind.name] = kind
    return dict(sorted(kinds.items()))




