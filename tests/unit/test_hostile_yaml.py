"""Hostile and accidental input to `harness.yamlfile.load_yaml`: nothing may crash, hang or silently change
what a file says. Each class of input is generated (hypothesis over document structure, position, character,
size and kind of file) and must end in an InputError that names the file and the line and says what to write
instead; plain documents must still load exactly as PyYAML reads them."""

from __future__ import annotations

import json
import os
import re
import socket
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness import yamlfile
from harness.contract import load_contract
from harness.errors import InputError
from harness.yamlfile import MAX_DEPTH, MAX_INPUT_BYTES, load_yaml, visible
from tests.helpers import CONTRACT

FIXTURE = settings(suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None)
_STR_TAG = "tag:yaml.org,2002:str"
_resolver = yaml.resolver.Resolver()

# --- a small block-style emitter that knows the line of every node --------------------------------------
Path_ = tuple[str | int, ...]
Tree = Any


@dataclass
class Doc:
    """A tree emitted as block YAML, with hooks to put raw text in: a prefix before a node (a tag or an
    anchor), a node's text replaced (an alias, an escape), extra raw entries at the end of a mapping."""

    tree: Tree
    prefix: dict[Path_, str] = field(default_factory=dict)
    raw: dict[Path_, str] = field(default_factory=dict)
    extra: dict[Path_, list[tuple[str, str]]] = field(default_factory=dict)
    lines: dict[Path_, int] = field(default_factory=dict)
    extra_lines: list[int] = field(default_factory=list)

    def text(self) -> str:
        out: list[str] = []
        self.lines.clear()
        self.extra_lines.clear()
        self.lines[()] = 1
        self._map(self.tree, (), "", out)
        return "".join(line + "\n" for line in out)

    def _value(self, value: Tree, path: Path_, head: str, ind: str, out: list[str]) -> None:
        pre = self.prefix.get(path, "")
        self.lines[path] = len(out) + 1
        if path in self.raw:
            out.append(f"{head} {pre}{self.raw[path]}")
        elif isinstance(value, dict) and (value or path in self.extra):
            if head.endswith("-") and not pre:  # an item's collection starts on the next line
                self.lines[path] += 1
            out.append(f"{head} {pre}".rstrip())
            self._map(value, path, ind + "  ", out)
        elif isinstance(value, list) and value:
            if head.endswith("-") and not pre:
                self.lines[path] += 1
            out.append(f"{head} {pre}".rstrip())
            self._list(value, path, ind + "  ", out)
        else:
            out.append(f"{head} {pre}{scalar(value)}")

    def _map(self, tree: dict[str, Tree], path: Path_, ind: str, out: list[str]) -> None:
        for key, value in tree.items():
            self._value(value, (*path, key), f"{ind}{plain_or_quoted(key)}:", ind, out)
        for key_text, value_text in self.extra.get(path, []):
            self.extra_lines.append(len(out) + 1)
            out.extend(f"{ind}{part}" for part in f"{key_text}: {value_text}".split("\n"))

    def _list(self, items: list[Tree], path: Path_, ind: str, out: list[str]) -> None:
        for i, value in enumerate(items):
            self._value(value, (*path, i), f"{ind}-", ind, out)

    def nodes(self) -> Iterator[tuple[Path_, Tree]]:
        def walk(path: Path_, value: Tree) -> Iterator[tuple[Path_, Tree]]:
            yield path, value
            if isinstance(value, dict):
                for k, v in value.items():
                    yield from walk((*path, k), v)
            elif isinstance(value, list):
                for i, v in enumerate(value):
                    yield from walk((*path, i), v)

        return walk((), self.tree)

    def mappings(self) -> list[Path_]:
        return [p for p, v in self.nodes() if isinstance(v, dict)]


def leaves(doc: Doc) -> list[Path_]:
    """Paths of the nodes written on one line: scalars and empty collections."""
    return [p for p, v in doc.nodes() if p and not (isinstance(v, dict | list) and v)]


def resolves_to_str(text: str) -> bool:
    return _resolver.resolve(yaml.ScalarNode, text, (True, False)) == _STR_TAG


def plain_or_quoted(text: str) -> str:
    plain = re.fullmatch(r"[A-Za-zæøåÆØÅ][\wæøåÆØÅ.-]*", text) and resolves_to_str(text)
    return text if plain else json.dumps(text, ensure_ascii=False)


def scalar(value: Tree) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, dict):
        return "{}"
    if isinstance(value, list):
        return "[]"
    return plain_or_quoted(value)


# --- strategies -------------------------------------------------------------------------------------------
EXTRA_INVISIBLE = "\u115f\u1160\u3164\uffa0\u2800\ufffe\uffff"
visible_chars = st.characters(
    blacklist_categories=("Cc", "Cf", "Cs", "Zl", "Zp", "Co", "Cn"), blacklist_characters=EXTRA_INVISIBLE
)
keys = st.text(alphabet="abcdefghijklmnopqrstuvwxyzæøå_-0123456789", min_size=1, max_size=8).filter(
    lambda k: k[0].isalpha()
)
texts = st.one_of(
    st.text(visible_chars, max_size=20),
    st.sampled_from(["Knappetrykk", "Responssenter Øst", "linje 1\nlinje 2", "a\tb", "30\u00a0s", "<= 30s", "yes"]),
)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**9), 10**9),
    st.floats(-1e6, 1e6, allow_nan=False).map(lambda f: float(f"{f:.3f}")),
    texts,
)
trees = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(keys, inner, max_size=4)),
    max_leaves=25,
)
documents = st.dictionaries(keys, trees, min_size=1, max_size=5)
# every character the loader must refuse when it stands in the file as written
raw_forbidden = st.one_of(
    st.characters(whitelist_categories=("Cc", "Cf", "Zl", "Zp")).filter(lambda c: c not in "\t\n\r"),
    st.sampled_from([*list(EXTRA_INVISIBLE), "\u200b", "\u202e", "\u2066", "\ufeff", "\x00", "\x85", "\xad"]),
)


def write(tmp_path: Path, text: str, name: str = "f.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def refusal(path: Path, what: str = "scenario") -> InputError:
    with pytest.raises(InputError) as info:
        load_yaml(path, what)
    err = info.value
    assert err.place is not None and err.place.source == str(path), err
    assert err.fix, err
    return err


def escape_of(ch: str) -> str:
    """A YAML double-quoted escape for `ch`."""
    code = ord(ch)
    named = {"\x00": "\\0", "\x07": "\\a", "\x08": "\\b", "\x1b": "\\e", "\x0b": "\\v", "\x0c": "\\f"}
    named |= {"\x85": "\\N", "\u2028": "\\L", "\u2029": "\\P", "\r": "\\r"}
    if ch in named:
        return named[ch]
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


# --- plain documents still load, with their lines ---------------------------------------------------------
@FIXTURE
@given(tree=documents)
def test_plain_documents_load_as_pyyaml_reads_them(tmp_path: Path, tree: dict[str, Tree]) -> None:
    doc = Doc(tree)
    text = doc.text()
    src = load_yaml(write(tmp_path, text), "scenario")
    assert src.data == yaml.safe_load(text) == tree
    for path, line in doc.lines.items():
        assert src.lines[path] == line, (path, text)


def test_the_repository_files_load_as_pyyaml_reads_them() -> None:
    root = CONTRACT.parents[2]
    files = [*root.glob("fixtures/**/*.yaml"), *root.glob("scenarios/**/*.yaml")]
    assert len(files) >= 5
    for path in files:
        assert load_yaml(path, "x").data == yaml.safe_load(path.read_text(encoding="utf-8")), path


# --- 1. anchors and aliases -------------------------------------------------------------------------------
def laughs(depth: int, width: int) -> str:
    lines = ['a0: &a0 ["lol"]']
    for i in range(1, depth + 1):
        lines.append(f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * width)}]")
    return "\n".join(lines) + "\n"


@FIXTURE
@given(depth=st.integers(1, 40), width=st.integers(1, 50))
def test_alias_bombs_are_refused_at_the_first_anchor(tmp_path: Path, depth: int, width: int) -> None:
    # width**depth nodes once expanded: up to 50**40; refused at line 1 before any expansion
    err = refusal(write(tmp_path, laughs(depth, width)))
    assert err.place is not None and err.place.line == 1
    assert "anchor `&a0`" in err.problem and "anchors and aliases" in err.problem


@FIXTURE
@given(tree=documents, data=st.data())
def test_any_anchor_or_alias_is_refused_where_it_stands(tmp_path: Path, tree: dict[str, Tree], data: Any) -> None:
    doc = Doc(tree)
    doc.text()
    paths = [p for p, _ in doc.nodes() if p]
    anchored = data.draw(st.sampled_from(paths))
    doc.prefix[anchored] = "&x "
    others = [p for p in leaves(doc) if p[: len(anchored)] != anchored]
    aliased = data.draw(st.one_of(st.none(), st.sampled_from(others))) if others else None
    if aliased is not None:
        doc.raw[aliased] = "*x"
    text = doc.text()
    err = refusal(write(tmp_path, text))
    first = min(doc.lines[anchored], doc.lines[aliased] if aliased else 10**9)
    assert err.place is not None and err.place.line == first, text
    assert "anchors and aliases" in err.problem
    assert "in full" in (err.fix or "")


# --- 2. duplicate keys ------------------------------------------------------------------------------------
@FIXTURE
@given(tree=documents, data=st.data())
def test_a_key_given_twice_is_refused_naming_both_lines(tmp_path: Path, tree: dict[str, Tree], data: Any) -> None:
    doc = Doc(tree)
    doc.text()
    target = data.draw(st.sampled_from([p for p in doc.mappings() if data_at(tree, p)]))
    key = data.draw(st.sampled_from(sorted(data_at(tree, target))))
    spelling = data.draw(st.sampled_from([plain_or_quoted(key), json.dumps(key, ensure_ascii=False), f"'{key}'"]))
    doc.extra[target] = [(spelling, data.draw(st.sampled_from(["D", "1", "null", "[x]", "{y: z}"])))]
    text = doc.text()
    err = refusal(write(tmp_path, text))
    first, second = doc.lines[(*target, key)], doc.extra_lines[0]
    assert err.place is not None and err.place.line == second, text
    assert f"key `{visible(key)}` is given twice, on lines {first} and {second}" in err.problem


def data_at(tree: Tree, path: Path_) -> Any:
    for part in path:
        tree = tree[part]
    return tree


def test_a_contract_with_severity_given_twice_is_refused(tmp_path: Path) -> None:
    """The reported case: a second `severity` silently turned an A deviation into a D."""
    text = CONTRACT.read_text(encoding="utf-8").replace("    severity: A\n", "    severity: A\n    severity: D\n", 1)
    path = write(tmp_path, text, "kontrakt.yaml")
    second = text.splitlines().index("    severity: D") + 1
    with pytest.raises(InputError) as info:
        load_contract(path)
    assert info.value.place is not None and info.value.place.line == second
    assert f"`severity` is given twice, on lines {second - 1} and {second}" in info.value.problem
    assert "keep one of them" in (info.value.fix or "")


# --- 3. characters, tags, keys, nesting -------------------------------------------------------------------
@FIXTURE
@given(tree=documents, ch=raw_forbidden, where=st.floats(0, 1))
def test_control_and_invisible_characters_anywhere_are_refused_at_their_line_and_column(
    tmp_path: Path, tree: dict[str, Tree], ch: str, where: float
) -> None:
    text = Doc(tree).text()
    i = max(1, round(where * len(text)))  # a byte-order mark at offset 0 is allowed
    text = text[:i] + ch + text[i:]
    err = refusal(write(tmp_path, text))
    line = text[:i].count("\n") + 1
    column = i - (text.rfind("\n", 0, i) + 1) + 1
    assert err.place is not None and err.place.line == line
    assert f"U+{ord(ch):04X}" in err.problem and f"at column {column}" in err.problem
    assert ch not in err.message  # shown escaped
    assert "delete it" in (err.fix or "")


@FIXTURE
@given(
    tree=documents,
    data=st.data(),
    ch=st.one_of(
        st.characters(whitelist_categories=("Cc", "Cf", "Cs", "Zl", "Zp")).filter(lambda c: c not in "\t\n"),
        st.sampled_from(list(EXTRA_INVISIBLE)),
    ),
)
def test_escapes_that_make_invisible_characters_are_refused(
    tmp_path: Path, tree: dict[str, Tree], data: Any, ch: str
) -> None:
    doc = Doc(tree)
    doc.text()
    path = data.draw(st.sampled_from(leaves(doc)))
    before = data.draw(st.text(alphabet="abc æø", max_size=4))
    doc.raw[path] = json.dumps(before, ensure_ascii=False)[:-1] + escape_of(ch) + '"'
    text = doc.text()
    err = refusal(write(tmp_path, text))
    assert err.place is not None and err.place.line == doc.lines[path], text
    if unicodedata.category(ch) != "Cs":  # libyaml refuses a lone surrogate escape as malformed
        assert f"U+{ord(ch):04X}" in err.problem and ch not in err.message


@pytest.mark.parametrize(
    "key",
    ["ti\u00a0tle", "ti\u2003tle", "ti\u3000tle", '"ti\\_tle"', '"ti\\ttle"', '"ti\\u200btle"', '"ti\\x01tle"'],
)
def test_keys_with_special_spaces_or_escapes_are_refused(tmp_path: Path, key: str) -> None:
    err = refusal(write(tmp_path, f"covers: [TA-1.1]\n{key}: x\n"))
    assert err.place is not None and err.place.line == 2
    assert err.problem.startswith("key `ti\\") and "retype the key" in (err.fix or "")


TAGS = [
    "!!python/object:os.system",
    "!!python/name:eval",
    "!!python/object/apply:subprocess.call",
    "!foo",
    "!",
    "!!str",
    "!!int",
    "!!binary",
    "!!set",
    "!!omap",
    "!!map",
    "!!seq",
    "!!float",
    "!<tag:example.com,2026:x>",
]


@FIXTURE
@given(tree=documents, tag=st.sampled_from(TAGS), data=st.data())
def test_every_explicit_tag_is_refused(tmp_path: Path, tree: dict[str, Tree], tag: str, data: Any) -> None:
    doc = Doc(tree)
    doc.text()
    path = data.draw(st.sampled_from([p for p, _ in doc.nodes() if p]))
    doc.prefix[path] = tag + " "
    text = doc.text()
    err = refusal(write(tmp_path, text))
    assert err.place is not None and err.place.line == doc.lines[path], text
    assert "explicit YAML tag" in err.problem and "quotes" in (err.fix or "")


BAD_KEYS = {
    "merge key `<<`": ["<<: {x: 1}", "<<: [{x: 1}]"],
    "used as a key": ["? [a, b]\n: 1", "[a, b]: 1", "{a: 1}: x", "? {a: 1}\n: x", "? - a\n: 1"],
    "is read as": [
        "yes: 1",
        "No: 1",
        "on: 1",
        "true: 1",
        "1: x",
        "0x1f: x",
        "1.5: x",
        "~: x",
        "null: x",
        "2024-01-01: x",
        "1_000: x",
        ".inf: x",
        "12:30: x",
    ],
}


@FIXTURE
@given(tree=documents, kind=st.sampled_from(sorted(BAD_KEYS)), data=st.data())
def test_merge_complex_and_non_text_keys_are_refused(
    tmp_path: Path, tree: dict[str, Tree], kind: str, data: Any
) -> None:
    doc = Doc(tree)
    doc.text()
    target = data.draw(st.sampled_from(doc.mappings()))
    entry = data.draw(st.sampled_from(BAD_KEYS[kind]))
    key_text, _, value_text = entry.rpartition(": ")
    doc.extra[target] = [(key_text, value_text)]
    text = doc.text()
    err = refusal(write(tmp_path, text))
    assert err.place is not None and err.place.line == doc.extra_lines[0], text
    assert kind in err.problem


@FIXTURE
@given(depth=st.integers(MAX_DEPTH + 1, 20_000), style=st.sampled_from(["[", "{a: ", "block-list", "block-map"]))
def test_deep_nesting_is_refused_at_the_first_level_too_deep(tmp_path: Path, depth: int, style: str) -> None:
    if style.startswith("block"):
        depth = min(depth, 600)  # indentation grows with depth; beyond this the file is over the size limit
        line = "- " if style == "block-list" else "a:"
        text = "".join(f"{'  ' * i}{line}\n" for i in range(depth)) + "  " * depth + "x\n"
        expect_line = MAX_DEPTH + 1
    else:
        close = "]" if style == "[" else "}"
        text = style * depth + "1" + close * depth + "\n"
        expect_line = 1
    err = refusal(write(tmp_path, text))
    assert f"nesting deeper than {MAX_DEPTH} levels" in err.problem
    assert err.place is not None and err.place.line == expect_line


def test_nesting_up_to_the_limit_loads(tmp_path: Path) -> None:
    text = "a: " + "[" * (MAX_DEPTH - 1) + "1" + "]" * (MAX_DEPTH - 1) + "\n"
    data = load_yaml(write(tmp_path, text), "scenario").data
    depth = 1
    node = data["a"]
    while isinstance(node, list):
        node, depth = node[0], depth + 1
    assert depth == MAX_DEPTH


# --- 4. files that are not small regular UTF-8 files ------------------------------------------------------
def special(kind: str, tmp_path: Path) -> tuple[Path, str]:
    if kind == "directory":
        return tmp_path, "a directory"
    if kind == "fifo":
        os.mkfifo(tmp_path / "fifo.yaml")
        return tmp_path / "fifo.yaml", "a named pipe (FIFO)"
    if kind == "socket":
        sock = socket.socket(socket.AF_UNIX)
        sock.bind(str(tmp_path / "s.yaml"))
        sock.close()
        return tmp_path / "s.yaml", "a socket"
    if kind.startswith("/dev/"):
        return Path(kind), "a character device"
    if kind == "link to fifo":
        os.mkfifo(tmp_path / "fifo")
        (tmp_path / "l.yaml").symlink_to(tmp_path / "fifo")
        return tmp_path / "l.yaml", "a named pipe (FIFO)"
    if kind == "link to directory":
        (tmp_path / "l.yaml").symlink_to(tmp_path)
        return tmp_path / "l.yaml", "a directory"
    if kind == "symlink loop":
        (tmp_path / "a.yaml").symlink_to(tmp_path / "b.yaml")
        (tmp_path / "b.yaml").symlink_to(tmp_path / "a.yaml")
        return tmp_path / "a.yaml", "symbolic link that loops"
    raise AssertionError(kind)


@pytest.mark.parametrize(
    "kind",
    [
        "directory",
        "fifo",
        "socket",
        "/dev/zero",
        "/dev/urandom",
        "/dev/null",
        "link to fifo",
        "link to directory",
        "symlink loop",
    ],
)
@pytest.mark.parametrize("what", ["scenario", "contract", "lab", "users"])
def test_special_files_are_refused_before_reading(tmp_path: Path, kind: str, what: str) -> None:
    path, expected = special(kind, tmp_path)
    if not path.exists() and not path.is_symlink():
        pytest.skip(f"{path} does not exist here")
    err = refusal(path, what)
    assert expected in err.problem and err.problem.startswith(f"{what} file is")


@settings(FIXTURE, max_examples=12)
@given(
    size=st.one_of(
        st.integers(MAX_INPUT_BYTES - 8, MAX_INPUT_BYTES + 8), st.sampled_from([2 * MAX_INPUT_BYTES, 1 << 30])
    )
)
def test_files_over_the_size_bound_are_refused_unread(tmp_path: Path, size: int) -> None:
    path = tmp_path / "big.yaml"
    head = b"a: 1\n#"
    with path.open("wb") as f:
        f.write(head)
        if size <= MAX_INPUT_BYTES:
            f.write(b"x" * (size - len(head) - 1) + b"\n")
        else:
            f.truncate(size)  # sparse: reading it would take seconds and gigabytes
    if size <= MAX_INPUT_BYTES:
        assert load_yaml(path, "lab").data == {"a": 1}
    else:
        err = refusal(path, "lab")
        assert f"is {size} bytes, more than the {MAX_INPUT_BYTES} bytes" in err.problem


INVALID_UTF8 = [b"\xff", b"\xfe", b"\xc3", b"\xe2\x82", b"\xed\xa0\x80", b"\xc0\xaf", b"\xf8\x88\x80\x80\x80", b"\x80"]


@FIXTURE
@given(tree=documents, bad=st.sampled_from(INVALID_UTF8), where=st.floats(0, 1))
def test_invalid_utf8_is_refused_with_offset_and_line(
    tmp_path: Path, tree: dict[str, Tree], bad: bytes, where: float
) -> None:
    text = Doc(tree).text()
    i = round(where * len(text))
    offset = len(text[:i].encode())
    raw = text[:i].encode() + bad + text[i:].encode()
    path = tmp_path / "f.yaml"
    path.write_bytes(raw)
    err = refusal(path)
    assert f"at byte offset {offset} cannot be decoded" in err.problem
    assert err.place is not None and err.place.line == text[:i].count("\n") + 1
    assert "UTF-8" in (err.fix or "")


# --- one test per message ---------------------------------------------------------------------------------
def test_message_file_not_found(tmp_path: Path) -> None:
    err = refusal(tmp_path / "nope.yaml", "lab")
    assert err.problem == "lab file not found" and err.fix == "check the path"


def test_message_symlink_loop(tmp_path: Path) -> None:
    path, _ = special("symlink loop", tmp_path)
    err = refusal(path, "contract")
    assert err.problem.startswith("contract file is a symbolic link that loops")
    assert "ln -sfn" in (err.fix or "")


def test_message_permission_denied_simulated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Simulated with a patched os.open: the tests run as root, which may read any file."""
    path = write(tmp_path, "a: 1\n")

    def denied(*args: Any, **kwargs: Any) -> int:
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(yamlfile.os, "open", denied)
    err = refusal(path, "users")
    assert err.problem == "users file cannot be read: permission denied"
    assert "read access" in (err.fix or "")


def test_message_other_os_errors(tmp_path: Path) -> None:
    err = refusal(tmp_path / ("x" * 300 + ".yaml"), "lab")  # a name longer than the file system allows
    assert err.problem == "lab file cannot be read: File name too long"
    assert "readable YAML file" in (err.fix or "")
    file = write(tmp_path, "a: 1\n")
    err = refusal(file / "below.yaml", "lab")
    assert err.problem == "lab file cannot be read: Not a directory"


def test_message_not_a_regular_file(tmp_path: Path) -> None:
    err = refusal(tmp_path, "scenario")
    assert err.problem == "scenario file is a directory, not a regular file; vtlab reads only regular files"
    assert err.fix == "give the path of the scenario YAML file itself"


def test_message_too_big(tmp_path: Path) -> None:
    path = tmp_path / "big.yaml"
    with path.open("wb") as f:
        f.truncate(MAX_INPUT_BYTES + 1)
    err = refusal(path, "users")
    assert "(MAX_INPUT_BYTES)" in err.problem and "split a very large one" in (err.fix or "")


def test_message_grown_after_stat_simulated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Simulated: the file is reported small by stat but is big when read (it grew in between)."""
    path = tmp_path / "grows.yaml"
    path.write_bytes(b"#" * (MAX_INPUT_BYTES + 10))
    real_stat = os.stat

    def small(p: Any, *args: Any, **kwargs: Any) -> os.stat_result:
        st_ = real_stat(p, *args, **kwargs)
        return os.stat_result((st_.st_mode, *st_[1:6], 10, *st_[7:]))

    monkeypatch.setattr(yamlfile.os, "stat", small)
    err = refusal(path, "lab")
    assert f"more than the {MAX_INPUT_BYTES} bytes" in err.problem


def test_message_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    text = "title: Knapp\nsenter: Responssenter Øst\n"
    path.write_bytes(text.encode("latin-1"))
    err = refusal(path)
    offset = text.index("Ø")
    assert err.problem == f"scenario file is not UTF-8 text: byte 0xd8 at byte offset {offset} cannot be decoded"
    assert err.place is not None and err.place.line == 2
    assert "save the file as UTF-8" in (err.fix or "")
    path.write_text("title: Knapp\n", encoding="utf-16")
    assert "(it looks like UTF-16)" in refusal(path).problem


def test_message_invisible_character(tmp_path: Path) -> None:
    err = refusal(write(tmp_path, "title: Knapp\ncovers: [TA-1.1\u200b]\n"))
    assert err.problem == "invisible character U+200B (ZERO WIDTH SPACE) at column 16: `covers: [TA-1.1\\u200b]`"
    assert err.place is not None and err.place.line == 2
    err = refusal(write(tmp_path, "severity: A  # \u202eD :ytireves\n"))
    assert "U+202E (RIGHT-TO-LEFT OVERRIDE)" in err.problem  # in a comment too: it reorders what is shown


def test_message_control_character(tmp_path: Path) -> None:
    err = refusal(write(tmp_path, "a: 1\nb: x\x1by\n"))
    assert err.problem == "control character U+001B at column 5: `b: x\\x1by`"
    assert err.place is not None and err.place.line == 2


def test_message_noncharacter_from_the_parser_is_named(tmp_path: Path) -> None:
    err = refusal(write(tmp_path, "a: b\ufffe\n"))
    assert "U+FFFE" in err.problem and err.place is not None and err.place.line == 1


def test_a_bom_at_the_start_is_fine(tmp_path: Path) -> None:
    assert load_yaml(write(tmp_path, "\ufeffa: 1\n"), "lab").data == {"a": 1}


def test_message_second_document(tmp_path: Path) -> None:
    err = refusal(write(tmp_path, "a: 1\n---\nb: 2\n"), "lab")
    assert err.problem == "a second YAML document (`---`) in one lab file"
    assert err.place is not None and err.place.line == 2 and "one document per file" in (err.fix or "")


def test_message_alias(tmp_path: Path) -> None:
    err = refusal(write(tmp_path, "a: 1\nb: *a\n"))
    assert err.problem == "YAML alias `*a`: vtlab files do not use anchors and aliases"
    assert err.place is not None and err.place.line == 2 and "write the repeated part out in full" in (err.fix or "")


def test_message_anchor(tmp_path: Path) -> None:
    err = refusal(write(tmp_path, "a: 1\nb: &b {c: 1}\n"))
    assert err.problem == "YAML anchor `&b`: vtlab files do not use anchors and aliases"
    assert err.place is not None and err.place.line == 2


def test_message_tag(tmp_path: Path) -> None:
    err = refusal(write(tmp_path, "a: 1\nb: !!python/object/apply:os.system [id]\n"))
    assert err.problem == "explicit YAML tag `!!python/object/apply:os.system`: vtlab files do not use tags"
    assert err.place is not None and err.place.line == 2 and "'1.0'" in (err.fix or "")


def test_message_too_many_nodes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(yamlfile, "MAX_NODES", 10)
    err = refusal(write(tmp_path, "a: [" + ", ".join(["1"] * 20) + "]\n"), "users")
    assert err.problem == "more than 10 keys, values and list items in one users file (MAX_NODES)"
    assert "split" in (err.fix or "")


def test_the_node_bound_holds_within_the_size_bound(tmp_path: Path) -> None:
    text = "a: [" + ",".join(["0"] * (yamlfile.MAX_NODES + 1)) + "]\n"
    assert len(text.encode()) < MAX_INPUT_BYTES
    assert "(MAX_NODES)" in refusal(write(tmp_path, text)).problem


def test_message_nesting(tmp_path: Path) -> None:
    err = refusal(write(tmp_path, "a: " + "[" * 100 + "]" * 100 + "\n"))
    assert err.problem == f"nesting deeper than {MAX_DEPTH} levels (MAX_DEPTH)"
    assert "unclosed brackets" in (err.fix or "")


def test_message_complex_key(tmp_path: Path) -> None:
    err = refusal(write(tmp_path, "a: 1\n? [x, y]\n: 2\n"))
    assert err.problem.startswith("a list used as a key") and err.place is not None and err.place.line == 2
    err = refusal(write(tmp_path, "{x: 1}: 2\n"))
    assert err.problem.startswith("a mapping used as a key")
    assert "plain name before the colon" in (err.fix or "")


def test_message_merge_key(tmp_path: Path) -> None:
    err = refusal(write(tmp_path, "a:\n  <<: {x: 1}\n"))
    assert err.problem == "merge key `<<`: vtlab files do not merge mappings"
    assert err.place is not None and err.place.line == 2 and "write the keys out" in (err.fix or "")


@pytest.mark.parametrize(
    ("key", "kind"),
    [("no", "a boolean"), ("1", "a number"), ("1.5", "a number"), ("~", "empty (null)"), ("2026-01-01", "a date")],
)
def test_message_key_that_is_not_text(tmp_path: Path, key: str, kind: str) -> None:
    err = refusal(write(tmp_path, f"a: 1\n{key}: x\n"))
    assert err.problem == f"key `{key}` is read as {kind}, not as a name"
    assert err.fix == f'write the key in quotes, e.g. `"{key}":`'
    assert load_yaml(write(tmp_path, f'a: 1\n"{key}": x\n'), "scenario").data == {"a": 1, key: "x"}


def test_message_duplicate_key(tmp_path: Path) -> None:
    err = refusal(write(tmp_path, "devices:\n  knapp: {model: a}\n  knapp: {model: b}\n"))
    assert err.problem == "key `knapp` is given twice, on lines 2 and 3 (YAML would silently keep only the last)"
    assert err.place is not None and err.place.line == 3


@pytest.mark.parametrize(
    ("value", "kind", "reason"),
    [("2026-13-45", "a date", "month must be in 1..12"), ("1" * 5000, "a number", "Exceeds the limit")],
)
def test_message_invalid_number_or_date(tmp_path: Path, value: str, kind: str, reason: str) -> None:
    err = refusal(write(tmp_path, f"a: 1\nb: {value}\n"))
    assert f"looks like {kind} but is not a valid one ({reason}" in err.problem
    assert err.place is not None and err.place.line == 2 and "put the value in quotes" in (err.fix or "")
    assert load_yaml(write(tmp_path, f'a: 1\nb: "{value}"\n'), "scenario").data["b"] == value


def test_message_key_with_invisible_character(tmp_path: Path) -> None:
    err = refusal(write(tmp_path, 'a: 1\n"ti\\u00a0tle": x\n'))
    assert err.problem == "key `ti\\xa0tle` holds space character U+00A0 (NO-BREAK SPACE)"
    assert err.place is not None and err.place.line == 2


def test_message_value_with_escaped_invisible_character(tmp_path: Path) -> None:
    err = refusal(write(tmp_path, 'a: 1\nid: "sa-ola\\u200b"\n'))
    assert err.problem == "value `sa-ola\\u200b` holds invisible character U+200B (ZERO WIDTH SPACE)"
    assert err.place is not None and err.place.line == 2 and "remove the escape" in (err.fix or "")


def test_escaped_tabs_and_line_breaks_in_values_are_fine(tmp_path: Path) -> None:
    assert load_yaml(write(tmp_path, 'a: "x\\ty\\nz"\n'), "lab").data == {"a": "x\ty\nz"}


def test_message_key_with_surrounding_space(tmp_path: Path) -> None:
    err = refusal(write(tmp_path, 'a: 1\n"title ": x\n'))
    assert err.problem == "key `title ` begins or ends with a space"
    assert err.fix == "write the key without the space: `title:`"


def test_message_malformed_yaml(tmp_path: Path) -> None:
    err = refusal(write(tmp_path, "a: [1\nb: 2\n"))
    assert err.problem.startswith("malformed YAML: ") and err.place is not None and err.place.line in (2, 3)


def test_visible_escapes_what_cannot_be_seen() -> None:
    assert visible("Øst\u200b\u00a0\t\x00\\") == "Øst\\u200b\\xa0\\t\\x00\\\\"
    assert visible("x" * 100, limit=10) == "x" * 10 + "..."
