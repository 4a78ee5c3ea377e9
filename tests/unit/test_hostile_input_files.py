"""Hostile variants of every example input file, through the public loaders `vtlab run` and `vtlab load`
use (`load_scenario`, `load_load_scenario`, `load_lab`, which also reads the personas file).

Each example (scenarios/**/*.yaml, fixtures/labs/*.yaml, the personas files) is mutated by hypothesis:
wrong types at any key, hostile numbers, durations, rates and texts, deleted and unknown keys, reshaped
mappings and lists, steps of another kind, and whole-file damage (empty, not a mapping, binary, truncated,
alias bombs, deep nesting, duplicate keys, tabs). Whatever comes in, the loader either loads it or raises
an InputError naming the file, a line and a fix, bounded in length; never another exception, never a hang
(a hard alarm per example) and never unbounded memory (traced per example). What loads is also used as a
run first uses it (a plan's definition for the evidence, a lab's topics), so a value that loads but
explodes later is caught too.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import tracemalloc
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness.contract import load_contract
from harness.errors import InputError
from harness.labfile import Lab, load_lab
from harness.load.scenario import load_load_scenario
from harness.scenario.loader import load_scenario
from harness.scenario.registry import step_kinds
from tests.helpers import CONTRACT, ROOT

SCENARIOS = sorted((ROOT / "scenarios").rglob("*.yaml"))
LOAD_SCENARIOS = [p for p in SCENARIOS if "load" in (yaml.safe_load(p.read_text(encoding="utf-8")) or {})]
FUNCTIONAL = [p for p in SCENARIOS if p not in LOAD_SCENARIOS]
PERSONAS = {
    ROOT / "fixtures/users/personas.yaml": "embedded.yaml",
    ROOT / "fixtures/labs/devices-personas.yaml": "devices-memory.yaml",
}
LABS = sorted(p for p in (ROOT / "fixtures/labs").glob("*.yaml") if p not in PERSONAS)

HARD_LIMIT_S = 10  # a loader that takes this long on one small file hangs
PEAK_BYTES = 256 * 1024 * 1024
MAX_MESSAGE = 2000
HYPO = settings(
    max_examples=300,
    deadline=3000,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)

# --- what goes in ---------------------------------------------------------------------------------------
_PLAIN = "null ~ true false yes no on 0 -1 1 3 2.5 -0.0 1e400 -1e400 .nan .inf -.inf 0x7f 0o17 1_000 12:00"
# fmt: off
RAW: list[str] = [  # YAML text put where a value stands (flow style, one line)
    *_PLAIN.split(), "2026-01-01", "9" * 5000, "-" + "9" * 5000, "0." + "9" * 5000,
    '""', '" "', '"-1s"', '"1e400s"', '"0s"', '"5"', '"5 s"', '"1.5h"', '"24h"', '"25h"', '"100000h"',
    '"99999999999999999999999h"', '"' + "9" * 5000 + 's"', '"0.' + "0" * 5000 + '1s"', '".5s"', '"1.s"', '"s"',
    '"0/s"', '"1e9/s"', '"-5/s"', '"99999999999999999999999/s"', '"' + "9" * 5000 + '/s"', '"1/h"', '"0.0001/h"',
    '"100%"', '"0%"', '"101%"', '"1e400%"', '"' + "9" * 400 + '%"', '"-5%"', '"0.5%"',
    '"00:00"', '"24:00"', '"23:59"', '"22:00-22:00"', '"22:00-07:00-01:00"', '"-"', '"07:00"',
    '"' + "x" * 100_000 + '"', '"' + "a" * 300 + '"', '"' + "/" * 5000 + '"', '"æøå ÆØÅ ☃ 𝕏 漢字"', '"²"', '"١٢s"',
    '"\\u202e"', '"\\t"', '"\\0"', '"a\\nb"', '"\\u00a0"', '"{device}{0}{"', '"%s%n"', '"+/#"',
    '"{site}/{device:>99999999}"', '"{site}/{device!r}"', '"../../../../etc/passwd"', '"/dev/zero"', '"/dev/stdin"',
    '"/"', '"."', '"C:\\\\x"', '"persona/ragnhild-87"', '"127.0.0.1:99999"', '"host:²"', '"host:' + "9" * 5000 + '"',
    '":"', '"mqtt://[::1"', '"mqtts://h:0"', '"https://"', '"http://x"', '"mqtt://u:p@h:1/x?y#z"', '"mqtt://h:-1"',
    '"mqtt://h:70000"', "[]", "{}", "[1, 2]", "[null]", "[[]]", "{a: 1}", '["a", "b"]', "[{}]", '{"": 1}',
    "[" * 60 + "]" * 60, "[" * 70 + "]" * 70, "{a: " * 60 + "1" + "}" * 60,
]
# fmt: on
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=40),
    st.text(alphabet="0123456789.-/%:smhu ", max_size=12),
)
GENERATED = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=6,
)
HOSTILE = st.one_of(st.sampled_from(RAW).map(lambda raw: ("raw", raw)), GENERATED.map(lambda v: ("value", v)))

WHOLE_FILE = [  # (text, bytes) for the whole file; these may name the file without a line
    b"",
    b"   \n\n",
    b"# only a comment\n",
    b"- a\n- b\n",
    b"42\n",
    b'"text"\n',
    b"null\n",
    b"[]\n",
    b"\x00\x01\x02\xff\xfe\x80binary",
    "æøå".encode("utf-16"),
    b"\xef\xbb\xbf",
    b"a: &a [1, 2]\nb: *a\n",
    b'a: &a ["x","x","x","x","x","x","x","x","x"]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: [*b,*b,*b,*b,*b,*b,*b]\n',
    ("a: " + "[" * 200 + "]" * 200 + "\n").encode(),
    ("a:\n" + "".join(" " * i + f"k{i}:\n" for i in range(1, 120)) + "\n").encode(),
    b"title: x\ntitle: y\n",
    b"\ttitle: x\n",
    b"title: x\n---\ntitle: y\n",
    b"!!python/object:os.system {}\n",
    b"? [a]\n: 1\n",
    b"<<: {a: 1}\n",
    b"{" * 10_000,
    b"'unterminated\n",
    b"key: value\n" * 200_000,  # ~2.2 MB of the same key: refused as a duplicate, fast
]
_NAMES = """title covers steps criteria devices drain within rate from duration shape via centres heartbeat connect
max_lag max_cpu storm peak acknowledge time_scaled time_scale local_time profile insecure epj mode api skew timeout
interval serial ble dc09 scaip probes thresholds wandering night events user users id model at metric"""
NEAR_NAMES = _NAMES.split()  # keys that stand somewhere in these files: added where they do not belong


# --- mutating a parsed document -------------------------------------------------------------------------
@dataclass
class Mutant:
    tree: Any
    raw: dict[str, str] = field(default_factory=dict)
    whole_file: bytes | None = None
    ops: list[str] = field(default_factory=list)
    root_replaced: bool = False  # the document as a whole is wrong (empty, a list ...): no line to name

    def text(self) -> bytes:
        if self.whole_file is not None:
            return self.whole_file
        if self.tree is None and not self.raw:
            return b""
        out = yaml.safe_dump(self.tree, allow_unicode=True, sort_keys=False, width=10**9)
        for mark, raw in self.raw.items():
            out = out.replace(mark, raw, 1)
        return out.encode("utf-8", "surrogatepass")


def _paths(node: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield path
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, (*path, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _paths(v, (*path, i))


def _get(tree: Any, path: tuple[Any, ...]) -> Any:
    for part in path:
        tree = tree[part]
    return tree


def _set(m: Mutant, path: tuple[Any, ...], value: Any) -> None:
    if not path:
        m.tree, m.root_replaced = value, True
    else:
        _get(m.tree, path[:-1])[path[-1]] = value


def _hostile(m: Mutant, hostile: tuple[str, Any]) -> Any:
    kind, value = hostile
    if kind == "value":
        return value
    mark = f"HOSTILEPLACEHOLDER{len(m.raw)}X"
    m.raw[mark] = value
    return mark


def _mutate(m: Mutant, data: st.DataObject) -> None:
    paths = list(_paths(m.tree))
    path = data.draw(st.sampled_from(paths))
    node = _get(m.tree, path)
    op = data.draw(st.sampled_from(["replace", "replace", "replace", "delete", "unknown", "reshape", "step_kind"]))
    if op == "delete" and path:
        parent = _get(m.tree, path[:-1])
        del parent[path[-1]]
    elif op == "unknown" and isinstance(node, dict):
        near = [k[:-1] for k in node if isinstance(k, str) and len(k) > 2]  # a typo of a key that stands here
        key = data.draw(st.sampled_from(NEAR_NAMES + near) | st.text(max_size=12))
        if key in node:
            op = "replace"
        else:
            node[key] = _hostile(m, data.draw(HOSTILE))
    elif op == "reshape":
        if isinstance(node, dict):
            _set(m, path, list(node.values()))
        elif isinstance(node, list):
            _set(m, path, {f"k{i}": v for i, v in enumerate(node)})
        else:
            _set(m, path, data.draw(st.sampled_from([[node], {"v": node}])))
    elif op == "step_kind" and isinstance(m.tree, dict) and isinstance(m.tree.get("steps"), list) and m.tree["steps"]:
        i = data.draw(st.integers(0, len(m.tree["steps"]) - 1))
        step = m.tree["steps"][i]
        args = next(iter(step.values())) if isinstance(step, dict) and step else {}
        m.tree["steps"][i] = {data.draw(st.sampled_from(sorted(step_kinds()))): args}
    else:
        op = "replace"
    if op == "replace":
        _set(m, path, _hostile(m, data.draw(HOSTILE)))
    m.ops.append(f"{op} {'.'.join(map(str, path)) or '(root)'}")


def _text_damage(m: Mutant, data: st.DataObject) -> None:
    """Damage to the text itself: a line repeated (a duplicate key), a tab, a cut, flipped bytes."""
    text = m.text()
    lines = text.split(b"\n")
    what = data.draw(st.sampled_from(["dup_line", "tab", "truncate", "flip", "anchor"]))
    i = data.draw(st.integers(0, max(0, len(lines) - 1)))
    if what == "dup_line":
        lines.insert(i, lines[i])
    elif what == "tab":
        lines[i] = b"\t" + lines[i]
    elif what == "anchor":
        lines[i] = lines[i].replace(b": ", b": &x ", 1) + b"\nzz_alias: *x"
    text = b"\n".join(lines)
    if what == "truncate":
        text = text[: data.draw(st.integers(0, len(text)))]
    elif what == "flip" and text:
        rnd = random.Random(data.draw(st.integers(0, 2**32)))
        buf = bytearray(text)
        for _ in range(rnd.randint(1, 8)):
            buf[rnd.randrange(len(buf))] = rnd.randrange(256)
        text = bytes(buf)
    m.whole_file = text
    m.ops.append(what)


def mutant(source: Path, data: st.DataObject) -> Mutant:
    tree = yaml.safe_load(source.read_text(encoding="utf-8"))
    m = Mutant(json.loads(json.dumps(tree)))
    how = data.draw(st.sampled_from(["tree"] * 6 + ["text", "whole"]))
    if how == "whole":
        m.whole_file = data.draw(st.sampled_from(WHOLE_FILE))
        m.ops.append("whole file")
        return m
    for _ in range(data.draw(st.integers(1, 3))):
        _mutate(m, data)
    if how == "text":
        _text_damage(m, data)
    return m


# --- the bounds on what comes out -----------------------------------------------------------------------
class Hang(Exception):
    pass


@contextmanager
def bounded() -> Iterator[None]:
    """A hard time limit (SIGALRM) and a memory bound (tracemalloc peak) around one load."""

    def alarm(signum: int, frame: object) -> None:
        raise Hang(f"no answer within {HARD_LIMIT_S} s")

    old = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(HARD_LIMIT_S)
    tracemalloc.start()
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert peak < PEAK_BYTES, f"the loader used {peak / 2**20:.0f} MiB"


OPTION_OF = {"devices": "--users", "rate": "--rate", "duration": "--duration"}


def options(overrides: dict[str, Any] | None) -> tuple[str, ...]:
    """The command-line options that gave these load-scenario overrides."""
    return tuple(OPTION_OF[k] for k in overrides or {})


def judge(
    load: Callable[[], object], m: Mutant, written: Path, also: tuple[Path, ...] = (), given: tuple[str, ...] = ()
) -> str:
    """Load; the only acceptable failure is an InputError that names the file, a line and a fix (or, for a
    value given on the command line, that option)."""
    try:
        with bounded():
            load()
    except InputError as exc:
        text = str(exc)
        assert len(text) <= MAX_MESSAGE, f"message of {len(text)} characters after {m.ops}: {text[:300]}..."
        assert exc.place is not None, f"no place after {m.ops}: {text}"
        if exc.place.source in given:
            assert exc.fix, f"no fix after {m.ops}: {text}"
            return "refused"
        assert exc.place.source in {str(written), *map(str, also)}, f"wrong file after {m.ops}: {text}"
        assert exc.fix, f"no fix after {m.ops}: {text}"
        if m.whole_file is None and not m.root_replaced:
            assert exc.place.line is not None, f"no line after {m.ops}: {text}"
        return "refused"
    except Hang:
        raise AssertionError(f"hang after {m.ops}") from None
    return "loaded"


def use_lab(lab: Lab) -> None:
    """What a run reads first from a loaded lab file: its topics filled in, its evidence copy, pull APIs."""
    for name in lab.spec.topics:
        assert len(lab.topic(name, device="d", centre="c")) < 4096
    lab.redacted()
    for probe in lab.spec.probes:
        lab.pull_api(probe)
    for device in lab.spec.devices:
        lab.expected_centre(device)


# --- the files in place ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """fixtures/ copied with the files the examples refer to (placeholder PEMs, the secrets' variables)."""
    ws = tmp_path_factory.mktemp("hostile")
    shutil.copytree(ROOT / "fixtures" / "labs", ws / "labs")
    shutil.copytree(ROOT / "fixtures" / "users", ws / "users")
    certs = ws / "certs" / "supplier"
    certs.mkdir(parents=True)
    for name in ("ca.pem", "vtlab.pem", "vtlab.key", "vkp-client.pub.pem"):
        (certs / name).write_text("-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----\n")
    (ws / "scenarios").mkdir()
    saved = {k: os.environ.get(k) for k in ("VTLAB_KEY_PASSPHRASE", "VTLAB_BROKER_PASSWORD")}
    os.environ.update(dict.fromkeys(saved, "x"))
    yield ws
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(scope="module")
def contract() -> Any:
    return load_contract(CONTRACT)[0]


@pytest.fixture(scope="module")
def lab(workspace: Path) -> Lab:
    return load_lab(workspace / "labs" / "embedded.yaml")


def test_the_examples_load_in_the_workspace(workspace: Path, contract: Any, lab: Lab) -> None:
    """The starting points load, so every mutant differs from a good file by its mutations alone."""
    for p in LABS:
        load_lab(workspace / "labs" / p.name)
    for p in FUNCTIONAL:
        load_scenario(p, contract, lab)
    for p in LOAD_SCENARIOS:
        load_load_scenario(p, contract)
    assert len(FUNCTIONAL) >= 20 and len(LOAD_SCENARIOS) >= 5 and len(LABS) >= 4 and len(PERSONAS) == 2


@HYPO
@given(data=st.data())
def test_hostile_functional_scenarios(workspace: Path, contract: Any, lab: Lab, data: st.DataObject) -> None:
    m = mutant(data.draw(st.sampled_from(FUNCTIONAL)), data)
    path = workspace / "scenarios" / "hostile.yaml"
    path.write_bytes(m.text())
    judge(lambda: load_scenario(path, contract, lab).definition(), m, path)


@HYPO
@given(data=st.data())
def test_hostile_load_scenarios(workspace: Path, contract: Any, data: st.DataObject) -> None:
    m = mutant(data.draw(st.sampled_from(LOAD_SCENARIOS)), data)
    path = workspace / "scenarios" / "hostile-load.yaml"
    path.write_bytes(m.text())
    overrides = data.draw(
        st.none()
        | st.fixed_dictionaries(
            {},
            optional={
                "devices": st.integers(-5, 10**9) | st.none(),
                "rate": st.sampled_from(["0/s", "1e9/s", "5/s", "", "-1/s", "x"]),
                "duration": st.sampled_from(["-1s", "1e400s", "0s", "5", "2s", "999999h"]),
            },
        )
    )
    judge(
        lambda: load_load_scenario(path, contract, overrides=overrides or None).definition(),
        m,
        path,
        given=options(overrides),
    )


@HYPO
@given(data=st.data())
def test_hostile_lab_files(workspace: Path, data: st.DataObject) -> None:
    m = mutant(data.draw(st.sampled_from(LABS)), data)
    path = workspace / "labs" / "hostile-lab.yaml"
    path.write_bytes(m.text())
    judge(lambda: use_lab(load_lab(path)), m, path)


@HYPO
@given(data=st.data())
def test_hostile_personas(workspace: Path, data: st.DataObject) -> None:
    """The personas file is read through the lab file that names it; a mistake in how the two fit together
    (a user's centre the lab does not list) may be named in the lab file."""
    source = data.draw(st.sampled_from(sorted(PERSONAS)))
    m = mutant(source, data)
    folder = "users" if source.parent.name == "users" else "labs"
    path = workspace / folder / source.name
    lab_path = workspace / "labs" / PERSONAS[source]
    path.write_bytes(m.text())
    try:
        judge(lambda: use_lab(load_lab(lab_path)), m, path, also=(lab_path,))
    finally:
        shutil.copy(source, path)


# --- what the generated inputs found, kept as fixed cases -----------------------------------------------
_STEADY, _STORM = "scenarios/capacity/flate_jevn_last.yaml", "scenarios/capacity/strombrudd_storm.yaml"
_ALARM, _PULL = "scenarios/alarm/alarmknapp.yaml", "fixtures/labs/embedded-epj-pull.yaml"
_EXTERNAL, _EMBEDDED = "fixtures/labs/external-example.yaml", "fixtures/labs/embedded.yaml"
FOUND = [  # (file, key path, YAML text put there, overrides of a load scenario)
    (_ALARM, ("criteria", 0, "metric"), "[]", None),  # TypeError: unhashable type
    (_ALARM, ("criteria", 0, "requirement"), "1.5", None),  # TypeError: not iterable
    (_ALARM, ("criteria", 0, "statistic"), "[p99]", None),
    (_ALARM, ("criteria", 0, "p99"), '"<= ' + "9" * 5000 + 's"', None),  # ValueError: int digit limit
    (_STORM, ("load", "storm", "devices"), '"' + "9" * 400 + '%"', None),  # OverflowError: float inf to int
    (_STORM, ("load", "storm", "at"), '"100000h"', None),  # loaded; the plan's per-second curve never ended
    (_STEADY, ("load", "connect"), '"' + "9" * 5000 + 's"', None),  # ValueError: int digit limit
    (_STEADY, ("load",), '"x"', {"devices": 3}),  # TypeError: a str is not a mapping (with --users)
    (_STEADY, ("covers", 0), '"' + "x" * 100_000 + '"', None),  # a 100 kB message
    (_EMBEDDED, ("users",), '"' + "a" * 300 + '"', None),  # OSError: file name too long
    (_PULL, ("probes", "journal", "epj", "key_file"), '"' + "a/" * 3000 + '"', None),  # OSError
    (_EXTERNAL, ("mqtt", "tls", "ca"), '"' + "a" * 300 + '"', None),  # OSError
    (_EXTERNAL, ("topics", "device_event"), '"{site}/{device:>999999999}"', None),  # a 1 GB topic when used
    ("fixtures/users/personas.yaml", ("personas", 0, "id"), '"' + "x" * 100_000 + '"', None),  # 100 kB message
]


@pytest.mark.parametrize(("name", "key", "raw", "overrides"), FOUND, ids=lambda v: str(v)[:40])
def test_what_the_generated_inputs_found(
    workspace: Path, contract: Any, lab: Lab, name: str, key: tuple[Any, ...], raw: str, overrides: Any
) -> None:
    source = ROOT / name
    m = Mutant(yaml.safe_load(source.read_text(encoding="utf-8")))
    _set(m, key, _hostile(m, ("raw", raw)))
    m.ops.append(f"{'.'.join(map(str, key))} = {raw[:40]}")
    if source in PERSONAS:
        path, lab_path = workspace / "users" / source.name, workspace / "labs" / PERSONAS[source]
        path.write_bytes(m.text())
        try:
            assert judge(lambda: use_lab(load_lab(lab_path)), m, path, also=(lab_path,)) == "refused"
        finally:
            shutil.copy(source, path)
    elif source in LABS:
        path = workspace / "labs" / "found-lab.yaml"
        path.write_bytes(m.text())
        assert judge(lambda: use_lab(load_lab(path)), m, path) == "refused"
    else:
        path = workspace / "scenarios" / "found.yaml"
        path.write_bytes(m.text())
        if source in LOAD_SCENARIOS:
            assert (
                judge(
                    lambda: load_load_scenario(path, contract, overrides=overrides).definition(),
                    m,
                    path,
                    given=options(overrides),
                )
                == "refused"
            )
        else:
            assert judge(lambda: load_scenario(path, contract, lab).definition(), m, path) == "refused"
