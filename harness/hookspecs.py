"""vtlab's extension points (pluggy hookspecs). Transports, devices and steps are plugins of the core.

A package adds to vtlab by exposing a module with `@hookimpl` functions under the `vtlab` entry-point
group; the built-in steps and devices are registered the same way.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from devices.model import DeviceModel
    from harness.scenario.registry import StepKind
    from harness.transports.registry import TransportKind

hookspec = pluggy.HookspecMarker("vtlab")
hookimpl = pluggy.HookimplMarker("vtlab")


class VtlabSpec:
    @hookspec
    def vtlab_steps(self) -> list[StepKind]:
        """Return the scenario step kinds this plugin provides (e.g. `trigger`, `expect_alarm`).

        Each step kind's docstring and argument model become its entry in `vtlab steps` and `vtlab schema`.
        """
        raise NotImplementedError

    @hookspec
    def vtlab_device_models(self) -> list[DeviceModel]:
        """Return the device models this plugin provides (e.g. `safety_alarm`)."""
        raise NotImplementedError

    @hookspec
    def vtlab_transports(self) -> list[TransportKind]:
        """Return the transports this plugin provides (e.g. `mqtt`, `memory`), chosen per device and
        probe by `via:` in the lab file."""
        raise NotImplementedError
