"""vtlab's plugin manager: steps, device models and transports all come through the hooks in
`harness.hookspecs`; the built-in ones are registered here like any outside plugin (entry-point group
`vtlab`)."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

import pluggy

from harness import hookspecs

if TYPE_CHECKING:
    from devices.model import DeviceModel


@functools.cache
def plugin_manager() -> pluggy.PluginManager:
    pm = pluggy.PluginManager("vtlab")
    pm.add_hookspecs(hookspecs.VtlabSpec)
    from devices import builtin as builtin_devices
    from devices import catalog as device_catalog
    from harness.links import device_transports
    from harness.scenario import device_steps
    from harness.scenario import security as security_steps
    from harness.scenario import steps as builtin_steps
    from harness.transports import builtin as builtin_transports

    pm.register(builtin_steps, name="vtlab.steps")
    pm.register(security_steps, name="vtlab.security")
    pm.register(builtin_devices, name="vtlab.devices")
    pm.register(builtin_transports, name="vtlab.transports")
    pm.register(device_catalog, name="vtlab.device_catalog")
    pm.register(device_transports, name="vtlab.device_links")
    pm.register(device_steps, name="vtlab.device_steps")
    pm.load_setuptools_entrypoints("vtlab")
    return pm


@functools.cache
def device_models() -> dict[str, DeviceModel]:
    """Every device model the plugins give (`vtlab_device_models`), by name: what links, the lab and the lab
    file look models up in (they sit below the scenario layer, so they ask here, not the step registry)."""
    models: dict[str, DeviceModel] = {}
    for batch in plugin_manager().hook.vtlab_device_models():
        for model in batch:
            models[model.name] = model
    return dict(sorted(models.items()))
