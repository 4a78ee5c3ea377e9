"""Load a scenario file and resolve it against the contract, the lab file and the step registry.

Everything a scenario can get wrong is reported here, at its line, before anything runs.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from harness.contract import Contract
from harness.errors import InputError
from harness.labfile import Lab
from harness.metrics import COUNT_METRICS, RATE_METRICS, dimension, statistics_for
from harness.scenario.plan import Criterion, DeviceBinding, ScenarioFile, ScenarioPlan, StepPlan
from harness.scenario.registry import device_models, step_kinds, suggest
from harness.units import parse_bounded_duration, parse_limit, parse_rate
from harness.yamlfile import SourceFile, load_yaml


def load_scenario(path: Path, contract: Contract, lab: Lab, scenario_id: str | None = None) -> ScenarioPlan:
    src = load_yaml(path, "scenario")
    if not isinstance(src.data, dict):
        raise InputError("a scenario file holds one mapping", place=src.place(), fix="start with `title:`")
    spec = src.validate(ScenarioFile)
    plan = ScenarioPlan(id=scenario_id or str(path), path=path, spec=spec, source=src, contract=contract, lab=lab)

    for i, req in enumerate(spec.covers):
        if contract.get(req) is None:
            raise InputError(
                f"unknown requirement id `{req}`",
                place=src.place("covers", i),
                fix=f"{suggest(req, contract.ids)}use ids from the contract {contract.contract.id}",
            )
    if spec.pace is not None:
        plan.pace_per_s = parse_rate(spec.pace, src.place("pace"))
    if spec.drain is not None:
        plan.drain_ns = parse_bounded_duration(spec.drain, src.place("drain"), low_ns=0,
                                               high_ns=600 * 1_000_000_000, what="a drain")

    if spec.time_scaled and lab.spec.platform.kind == "embedded":
        plan.time_scale = lab.spec.platform.time_scale
    _resolve_devices(plan)
    _resolve_steps(plan)
    _resolve_criteria(plan)
    return plan


def _resolve_devices(plan: ScenarioPlan) -> None:
    spec, src, lab = plan.spec, plan.source, plan.lab
    inventory = lab.spec.devices
    models = device_models()
    for alias, use in spec.devices.items():
        place = src.place("devices", alias)
        if use.id is not None:
            if use.id not in inventory:
                raise InputError(
                    f"unknown device `{use.id}`",
                    place=src.place("devices", alias, "id"),
                    fix=f"{suggest(use.id, inventory)}use a device id from the lab file {lab.path.name}: "
                    f"{sorted(inventory)}",
                )
            ids: tuple[str, ...] = (use.id,)
            model_name = inventory[use.id].model
        else:
            if use.model is None:
                raise InputError(f"device `{alias}` names neither `id` nor `model`", place=place,
                                 fix="write `{model: safety_alarm}` or `{id: <device id from the lab file>}`")
            model_name = use.model
            if model_name not in models:
                raise InputError(
                    f"unknown device model `{model_name}`",
                    place=src.place("devices", alias, "model"),
                    fix=f"{suggest(model_name, models)}use one of {sorted(models)}",
                )
            user = use.user or spec.user
            candidates = [d for d, dev in inventory.items() if dev.model == model_name
                          and ((use.rotate and use.user is None) or dev.user == user)]
            if not candidates:
                who = f"user `{user}`" if user else "no user (set `user:` on the scenario or the device)"
                raise InputError(
                    f"unknown device: the lab file {lab.path.name} has no `{model_name}` for {who}",
                    place=place,
                    fix="add such a device to the lab file's `devices:`, or pick another user or model",
                )
            ids = tuple(candidates)
        if model_name not in models:
            raise InputError(f"unknown device model `{model_name}`", place=lab.src.place("devices", ids[0], "model"),
                             fix=f"use one of {sorted(models)}")
        plan.devices[alias] = DeviceBinding(alias, ids, models[model_name], use.rotate)


def _resolve_steps(plan: ScenarioPlan) -> None:
    kinds = step_kinds()
    src = plan.source
    for i, raw in enumerate(plan.spec.steps):
        place = src.place("steps", i)
        if not isinstance(raw, dict) or len(raw) != 1:
            raise InputError(
                "a step is one `kind: {arguments}` mapping",
                place=place,
                fix="write e.g. `- trigger: {device: button, event: button_press}`",
            )
        ((name, args),) = raw.items()
        if name not in kinds:
            raise InputError(
                f"unknown step `{name}`",
                place=place,
                fix=f"{suggest(str(name), kinds)}known steps: {', '.join(kinds)} (see `vtlab steps`)",
            )
        kind = kinds[name]
        parsed = src.validate(kind.args, data=args if args is not None else {}, loc=("steps", i, name))
        step = StepPlan(i, kind, parsed, place)
        if kind.check is not None:
            kind.check(plan, step)
        plan.steps.append(step)


def _time_metrics(plan: ScenarioPlan) -> set[str]:
    names: set[str] = set()
    for step in plan.steps:
        if step.kind.metrics is not None:
            names.update(step.kind.metrics(step.args))
    return names


def _resolve_criteria(plan: ScenarioPlan) -> None:
    plan.criteria.extend(resolve_criteria(plan.source, plan.spec.criteria, plan.spec.covers, _time_metrics(plan)))


def resolve_criteria(src: SourceFile, criteria: list[dict[str, Any]], covers: list[str],
                     time_metrics: Iterable[str]) -> list[Criterion]:
    """A scenario's `criteria:` as checked Criterion objects: the one rule for functional and load scenarios
    (`time_metrics`: the duration metrics the scenario's steps or load run measure)."""
    out: list[Criterion] = []
    kinds: dict[str, str] = {m: "time" for m in time_metrics}
    kinds.update(dict.fromkeys(COUNT_METRICS, "count"))
    kinds.update(dict.fromkeys(RATE_METRICS, "rate"))
    for i, raw in enumerate(criteria):
        place = src.place("criteria", i)
        if not isinstance(raw, dict):
            raise InputError("a criterion is a mapping", place=place,
                             fix='write e.g. `- {metric: alarm_latency, p99: "<= 30s"}`')
        crit: dict[str, Any] = dict(raw)
        metric = crit.pop("metric", None)
        if metric is None:
            raise InputError("criterion has no `metric`", place=place, fix=f"add `metric:` with one of {sorted(kinds)}")
        if not isinstance(metric, str):
            raise InputError(
                f"`metric` is {_kind_of(metric)}, not the name of a metric",
                place=src.place("criteria", i, "metric"),
                fix=f"write one name, e.g. `metric: lost`; metrics here: {sorted(kinds)}",
            )
        if metric not in kinds:
            raise InputError(
                f"unknown metric `{metric}` (no step in this scenario measures it)",
                place=src.place("criteria", i, "metric"),
                fix=f"{suggest(str(metric), kinds)}metrics here: {sorted(kinds)}",
            )
        marginal_text = crit.pop("marginal", None)
        reqs = crit.pop("requirement", None)
        statistic = crit.pop("statistic", None)
        limit_text = crit.pop("limit", None)
        allowed = statistics_for(kinds[metric])
        if statistic is not None and not isinstance(statistic, str):
            raise InputError(
                f"`statistic` is {_kind_of(statistic)}, not the name of a statistic",
                place=src.place("criteria", i, "statistic"),
                fix=f"write one of {allowed}, e.g. `statistic: p99` with `limit:`",
            )
        if statistic is None:
            stat_keys = [k for k in crit if k in allowed]
            if len(stat_keys) != 1:
                raise InputError(
                    "criterion needs exactly one statistic with a limit",
                    place=place,
                    fix=f'write e.g. `p99: "<= 30s"`; statistics for {metric}: {allowed}',
                )
            statistic = stat_keys[0]
            limit_text = crit.pop(statistic)
        if crit:
            raise InputError(f"unknown key(s) {sorted(crit)} in criterion", place=place,
                             fix=f"use metric, one of {allowed}, marginal, requirement")
        dim = dimension(kinds[metric], statistic)
        if dim is None:
            raise InputError(f"statistic `{statistic}` does not apply to `{metric}`", place=place,
                             fix=f"use one of {allowed}")
        if limit_text is None:
            raise InputError("criterion has no limit", place=place, fix='add e.g. `limit: "<= 30s"`')
        limit = parse_limit(limit_text, dim, place)
        marginal = parse_limit(marginal_text, dim, place) if marginal_text is not None else None
        if reqs is None:
            requirements = tuple(covers)
        else:
            requirements = tuple([reqs] if isinstance(reqs, str) else reqs if isinstance(reqs, list) else [None])
            if not requirements or not all(isinstance(r, str) for r in requirements):
                raise InputError(
                    "`requirement` is neither a requirement id nor a list of them",
                    place=src.place("criteria", i, "requirement"),
                    fix=f"write one id or a list of ids from `covers:`, e.g. `requirement: {covers[0]}`",
                )
            for r in requirements:
                if r not in covers:
                    raise InputError(
                        f"criterion is bound to `{r}`, which this scenario does not cover",
                        place=src.place("criteria", i, "requirement"),
                        fix=f"add it to `covers:` or bind to one of {covers}",
                    )
        out.append(Criterion(metric, statistic, limit, marginal, dim, requirements, place))
    return out


def _kind_of(value: Any) -> str:
    """What a YAML value that should have been a name is, for a message."""
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if value is None:
        return "empty"
    if isinstance(value, bool):
        return "a boolean"
    return "a number" if isinstance(value, int | float) else f"`{value}`"
