"""YAML files with source positions, and pydantic validation errors turned into `file:line` messages.

Every vtlab input file (scenario, contract, lab, users, device profile) comes through `load_yaml`. The files
are signed evidence of what was agreed, so the loader reads a deliberately small, plain subset of YAML and
refuses the rest with the file, the line and what to write instead:

- only regular files up to `MAX_INPUT_BYTES`, strict UTF-8 (FIFOs, devices and directories are refused
  before anything is read, so `/dev/zero` cannot fill the memory);
- no control or invisible characters (zero-width spaces, bidi overrides, a BOM past the start ...) anywhere
  in the text, nor produced by escapes: what a reviewer sees is what is loaded;
- no anchors or aliases (`&a`, `*a`): refused outright rather than bounded, since they are what makes a
  few hundred bytes expand into gigabytes, and an acceptance file reads better written out in full;
  the same goes for merge keys (`<<`);
- no explicit tags (`!!python/...`, `!foo`, even `!!str`): quotes make a value text;
- mapping keys are plain text, each given once (YAML itself would silently keep the last of two);
- at most `MAX_DEPTH` levels of nesting and `MAX_NODES` values.

The document is built from the parser's event stream (not from composed nodes), which is iterative and
lets every rule stop the parse at the first offending event.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import stat
import unicodedata
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from harness.errors import InputError, Place

Loc = tuple[str | int, ...]
M = TypeVar("M", bound=BaseModel)

MAX_INPUT_BYTES = 4 * 1024 * 1024
"""Largest input file read; a lab's users file for a fleet of 10 000 is about 1 MiB."""
MAX_DEPTH = 64
"""Deepest nesting of mappings and lists; vtlab's own files nest six levels at most."""
MAX_NODES = 500_000
"""Most keys, values and list items in one file (bounds the work on a file within the size limit)."""

_Parser: Any = getattr(yaml, "CSafeLoader", None) or yaml.SafeLoader  # libyaml parses 20x faster
_STR = "tag:yaml.org,2002:str"
_MERGE = "tag:yaml.org,2002:merge"
_VALUE = "tag:yaml.org,2002:value"  # a plain `=`: YAML 1.1 has no constructor for it; it is the text "="
_KIND = {
    "tag:yaml.org,2002:null": "empty (null)",
    "tag:yaml.org,2002:bool": "a boolean",
    "tag:yaml.org,2002:int": "a number",
    "tag:yaml.org,2002:float": "a number",
    "tag:yaml.org,2002:timestamp": "a date",
}
_resolver = yaml.resolver.Resolver()
_constructor = yaml.constructor.SafeConstructor()

# Characters that look like nothing (or like something else) on screen. Besides the Unicode categories
# below: Hangul fillers and the braille blank, which render as blanks although they are letters/symbols.
_INVISIBLE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})
_INVISIBLE_EXTRA = frozenset("\u115f\u1160\u3164\uffa0\u2800\ufffe\uffff")
_SUSPECT = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\U0010ffff]")  # ASCII controls and all non-ASCII


@dataclass(slots=True)
class SourceFile:
    """A loaded YAML document with the line of every mapping key and list item."""

    path: Path
    text: str
    data: Any
    lines: dict[Loc, int] = field(default_factory=dict)

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()

    def line_of(self, loc: Loc) -> int | None:
        """Line of `loc`, or of its nearest ancestor that has one."""
        for end in range(len(loc), -1, -1):
            if loc[:end] in self.lines:
                return self.lines[loc[:end]]
        return None

    def place(self, *loc: str | int) -> Place:
        return Place(str(self.path), self.line_of(tuple(loc)))

    def validate(self, model: type[M], data: Any = None, loc: Loc = ()) -> M:
        """Validate into `model`; the first error becomes an InputError at its line."""
        try:
            return model.model_validate(self.data if data is None else data)
        except ValidationError as exc:
            raise validation_error(self, exc, loc) from None


# --- showing what the user cannot see ------------------------------------------------------------------
@lru_cache(maxsize=4096)
def _is_invisible(ch: str) -> bool:
    return unicodedata.category(ch) in _INVISIBLE_CATEGORIES or ch in _INVISIBLE_EXTRA


def _escape(ch: str) -> str:
    code = ord(ch)
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def _char_name(ch: str) -> str:
    name = unicodedata.name(ch, "")
    return f"U+{ord(ch):04X} ({name})" if name else f"U+{ord(ch):04X}"


def visible(text: str, limit: int = 80) -> str:
    """`text` for an error message: control, invisible and unusual space characters escaped (`\\u200b`,
    `\\t`, `\\xa0`), shortened to about `limit` characters. Letters such as æøå stay as they are."""
    out: list[str] = []
    for ch in text[: limit + 1] if len(text) > limit else text:
        if ch == "\\":
            out.append("\\\\")
        elif ch in "\t\n\r":
            out.append({"\t": "\\t", "\n": "\\n", "\r": "\\r"}[ch])
        elif ch != " " and (_is_invisible(ch) or unicodedata.category(ch) == "Zs"):
            out.append(_escape(ch))
        else:
            out.append(ch)
    shown = "".join(out)
    return shown[:limit] + "..." if len(text) > limit else shown


# --- reading the file ----------------------------------------------------------------------------------
_KIND_OF_FILE = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a named pipe (FIFO)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def _not_regular(mode: int) -> str | None:
    if stat.S_ISREG(mode):
        return None
    return next((name for test, name in _KIND_OF_FILE if test(mode)), "not a regular file")


def _os_error(exc: OSError, path: Path, what: str) -> InputError:
    if isinstance(exc, FileNotFoundError):
        return InputError(f"{what} file not found", place=str(path), fix="check the path")
    if exc.errno == errno.ELOOP:
        return InputError(
            f"{what} file is a symbolic link that loops (or a chain of links too long to follow)",
            place=str(path),
            fix="give the real file's path, or repair the link (`ln -sfn /full/path/to/file.yaml LINK`)",
        )
    if isinstance(exc, PermissionError):
        return InputError(
            f"{what} file cannot be read: permission denied",
            place=str(path),
            fix="give the user running vtlab read access",
        )
    return InputError(
        f"{what} file cannot be read: {exc.strerror or exc}",
        place=str(path),
        fix="give the path of a readable YAML file",
    )


def _refuse_kind(kind: str, path: Path, what: str) -> InputError:
    return InputError(
        f"{what} file is {kind}, not a regular file; vtlab reads only regular files",
        place=str(path),
        fix=f"give the path of the {what} YAML file itself",
    )


def _refuse_size(size: int, path: Path, what: str) -> InputError:
    return InputError(
        f"{what} file is {size} bytes, more than the {MAX_INPUT_BYTES} bytes vtlab reads (MAX_INPUT_BYTES)",
        place=str(path),
        fix="check that this is the right file; a vtlab file is a few kilobytes, split a very large one",
    )


def read_bounded(path: Path, what: str) -> bytes:
    """The bytes of a regular file of at most MAX_INPUT_BYTES. Special files are refused before they are
    opened (opening a FIFO waits for a writer; reading /dev/zero never ends), and checked again on the
    open descriptor in case the path was swapped in between."""
    try:
        st = os.stat(path)
    except OSError as exc:
        raise _os_error(exc, path, what) from None
    kind = _not_regular(st.st_mode)
    if kind:
        raise _refuse_kind(kind, path, what)
    if st.st_size > MAX_INPUT_BYTES:
        raise _refuse_size(st.st_size, path, what)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0))
    except OSError as exc:
        raise _os_error(exc, path, what) from None
    try:
        st = os.fstat(fd)
        kind = _not_regular(st.st_mode)
        if kind:
            raise _refuse_kind(kind, path, what)
        chunks: list[bytes] = []
        total = 0
        while total <= MAX_INPUT_BYTES:
            chunk = os.read(fd, min(1 << 20, MAX_INPUT_BYTES + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
    except OSError as exc:
        raise _os_error(exc, path, what) from None
    finally:
        os.close(fd)
    if total > MAX_INPUT_BYTES:  # grew after the stat
        raise _refuse_size(total, path, what)
    return b"".join(chunks)


def _line_col(text: str, index: int) -> tuple[int, int]:
    """1-based line and column of `text[index]`, counting line breaks as YAML does (LF, CRLF, CR)."""
    before = text[:index]
    line = before.count("\n") + before.count("\r") - before.count("\r\n") + 1
    start = max(before.rfind("\n"), before.rfind("\r")) + 1
    return line, index - start + 1


def _decode(raw: bytes, path: Path, what: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        bad = raw[exc.start : exc.start + 1].hex()
        hint = ""
        if raw[:2] in (b"\xff\xfe", b"\xfe\xff") or (len(raw) > 1 and raw[1:2] == b"\x00"):
            hint = " (it looks like UTF-16)"
        raise InputError(
            f"{what} file is not UTF-8 text{hint}: byte 0x{bad} at byte offset {exc.start} cannot be decoded",
            place=Place(str(path), line),
            fix="save the file as UTF-8 (in the editor: Save as..., encoding UTF-8), then retype any letter "
            "that came out wrong on this line",
        ) from None


def _check_characters(text: str, path: Path, what: str) -> None:
    """Refuse control and invisible characters anywhere in the file, comments included (a bidi override
    in a comment can make a line show a different value than the one that is loaded)."""
    for m in _SUSPECT.finditer(text):
        ch = m.group()
        if ch == "\ufeff" and m.start() == 0:  # a byte-order mark at the very start is harmless
            continue
        if ch < "\x80" or _is_invisible(ch):
            line, col = _line_col(text, m.start())
            start = m.start() - col + 1
            line_text = re.split(r"[\r\n]", text[start : start + 200], maxsplit=1)[0]
            raise InputError(
                f"{_kind_of_char(ch)} {_char_name(ch)} at column {col}: `{visible(line_text)}`",
                place=Place(str(path), line),
                fix="delete it (such characters are often pasted in from documents and chat programs, and make "
                "equal-looking text differ); if a text must hold a line break or a tab, write it as a block (`|`)",
            )


def _kind_of_char(ch: str) -> str:
    category = unicodedata.category(ch)
    return "control character" if category == "Cc" else "space character" if category == "Zs" else "invisible character"


# --- building the document -----------------------------------------------------------------------------
@dataclass(slots=True)
class _Frame:
    loc: Loc
    container: dict[str, Any] | list[Any]
    key: str | None = None  # a mapping's key waiting for its value
    key_lines: dict[str, int] = field(default_factory=dict)


def _short_tag(tag: str) -> str:
    return "!!" + tag.removeprefix("tag:yaml.org,2002:") if tag.startswith("tag:yaml.org,2002:") else tag


def _line(event: yaml.Event) -> int:
    mark = event.start_mark
    return int(mark.line) + 1 if mark is not None else 0


class _Builder:
    """Plain data and the line of every key and item, from the parser's events."""

    def __init__(self, path: Path, what: str) -> None:
        self.path, self.what = path, what
        self.lines: dict[Loc, int] = {}
        self.stack: list[_Frame] = []
        self.root: Any = None
        self.documents = 0
        self.nodes = 0

    def error(self, event: yaml.Event, problem: str, fix: str) -> InputError:
        return InputError(problem, place=Place(str(self.path), _line(event)), fix=fix)

    def feed(self, event: yaml.Event) -> None:
        if isinstance(event, yaml.DocumentStartEvent):
            self.documents += 1
            if self.documents > 1:
                raise self.error(
                    event,
                    f"a second YAML document (`---`) in one {self.what} file",
                    "keep one document per file: remove this `---` and what follows, or move it to a file of its own",
                )
        elif isinstance(event, yaml.AliasEvent):
            raise self.error(
                event,
                f"YAML alias `*{visible(event.anchor or '')}`: vtlab files do not use anchors and aliases",
                "write the repeated part out in full where it applies (vtlab refuses aliases: they can expand a "
                "small file without bound, and an acceptance file is read and signed as written)",
            )
        elif isinstance(event, yaml.NodeEvent):
            self._node(event)
        elif isinstance(event, yaml.CollectionEndEvent):
            self.stack.pop()

    def _node(self, event: yaml.NodeEvent) -> None:
        if event.anchor is not None:
            raise self.error(
                event,
                f"YAML anchor `&{visible(event.anchor)}`: vtlab files do not use anchors and aliases",
                "remove the anchor and write the repeated part out in full where it applies",
            )
        tag = getattr(event, "tag", None)
        if tag is not None:
            raise self.error(
                event,
                f"explicit YAML tag `{visible(_short_tag(tag))}`: vtlab files do not use tags",
                "remove the tag and write the value plainly; put it in quotes if it must stay text, e.g. '1.0'",
            )
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise self.error(
                event,
                f"more than {MAX_NODES} keys, values and list items in one {self.what} file (MAX_NODES)",
                "check that this is the right file; split a very large one",
            )
        parent = self.stack[-1] if self.stack else None
        if isinstance(parent, _Frame) and isinstance(parent.container, dict) and parent.key is None:
            self._key(parent, event)
            return
        if parent is None:
            loc: Loc = ()
        elif isinstance(parent.container, dict):
            assert parent.key is not None
            loc = (*parent.loc, parent.key)
        else:
            loc = (*parent.loc, len(parent.container))
        self.lines.setdefault(loc, _line(event))
        if isinstance(event, yaml.ScalarEvent):
            value = self._scalar(event)
        else:
            if len(self.stack) >= MAX_DEPTH:
                raise self.error(
                    event,
                    f"nesting deeper than {MAX_DEPTH} levels (MAX_DEPTH)",
                    "vtlab files nest a few levels; look for unclosed brackets `[`/`{` or runaway indentation",
                )
            value = {} if isinstance(event, yaml.MappingStartEvent) else []
        if parent is None:
            self.root = value
        elif isinstance(parent.container, dict):
            assert parent.key is not None
            parent.container[parent.key] = value
            parent.key = None
        else:
            parent.container.append(value)
        if isinstance(value, dict | list) and not isinstance(event, yaml.ScalarEvent):
            self.stack.append(_Frame(loc, value))

    def _key(self, frame: _Frame, event: yaml.NodeEvent) -> None:
        if not isinstance(event, yaml.ScalarEvent):
            shape = "mapping" if isinstance(event, yaml.MappingStartEvent) else "list"
            raise self.error(
                event,
                f"a {shape} used as a key (`? ` or `[...]:`/`{{...}}:`); keys in vtlab files are names",
                "write a plain name before the colon, e.g. `devices:`",
            )
        tag = _resolver.resolve(yaml.ScalarNode, event.value, event.implicit)
        if tag == _MERGE:
            raise self.error(
                event,
                "merge key `<<`: vtlab files do not merge mappings",
                "write the keys out in this mapping instead of merging them in",
            )
        if tag not in (_STR, _VALUE):
            shown = visible(event.value) or "(nothing)"
            raise self.error(
                event,
                f"key `{shown}` is read as {_KIND.get(tag, 'a value')}, not as a name",
                f'write the key in quotes, e.g. `"{shown}":`' if event.value else "write a name before the colon",
            )
        key = event.value
        self._check_text(event, key, is_key=True)
        line = _line(event)
        if key in frame.key_lines:
            raise self.error(
                event,
                f"key `{visible(key)}` is given twice, on lines {frame.key_lines[key]} and {line} "
                "(YAML would silently keep only the last)",
                "keep one of them, with the value that is meant",
            )
        frame.key_lines[key] = line
        frame.key = key
        self.lines[(*frame.loc, key)] = line

    def _scalar(self, event: yaml.ScalarEvent) -> Any:
        tag = _resolver.resolve(yaml.ScalarNode, event.value, event.implicit)
        if tag in (_STR, _VALUE, _MERGE):
            self._check_text(event, event.value, is_key=False)
            return event.value
        node = yaml.ScalarNode(tag, event.value, None, None, event.style)
        try:
            return _constructor.yaml_constructors[tag](_constructor, node)
        except (ValueError, OverflowError, yaml.YAMLError) as exc:
            kind = _KIND.get(tag, "a value")
            reason = str(exc).split(";")[0].split("\n")[0]
            raise self.error(
                event,
                f"`{visible(event.value)}` looks like {kind} but is not a valid one ({reason})",
                f"write a valid {kind.removeprefix('a ')}, or put the value in quotes to keep it as text",
            ) from None

    def _check_text(self, event: yaml.ScalarEvent, text: str, *, is_key: bool) -> None:
        """Characters that escapes such as "\\u200b" or "\\0" put into a value (raw ones are refused before)."""
        for ch in text:
            bad = ch not in "\t\n" and _is_invisible(ch)
            if is_key and not bad:
                bad = ch != " " and (ch in "\t\n" or unicodedata.category(ch) == "Zs")
            if bad and is_key:
                raise self.error(
                    event,
                    f"key `{visible(text)}` holds {_kind_of_char(ch)} {_char_name(ch)}",
                    "retype the key in plain letters, digits, `-` and `_` (no special spaces, tabs or escapes)",
                )
            if bad:
                raise self.error(
                    event,
                    f"value `{visible(text)}` holds {_kind_of_char(ch)} {_char_name(ch)}",
                    "remove the escape that makes it (`\\u...`, `\\x...`, `\\0` ...); write plain text",
                )
        if is_key and text != text.strip():
            raise self.error(
                event,
                f"key `{visible(text)}` begins or ends with a space",
                f"write the key without the space: `{visible(text.strip())}:`",
            )


def load_yaml(path: Path, what: str) -> SourceFile:
    """Read a vtlab YAML file (see the module docstring for the subset accepted); every refusal names the
    file and line and says what to write instead."""
    text = _decode(read_bounded(path, what), path, what)
    _check_characters(text, path, what)
    builder = _Builder(path, what)
    try:
        for event in yaml.parse(text, Loader=_Parser):
            builder.feed(event)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        problem = f"malformed YAML: {exc.problem or exc.context}"
        raise InputError(
            problem,
            place=Place(str(path), line),
            fix="check indentation, colons and quotes on this line (a value with ': ' or '#' needs quotes)",
        ) from None
    except yaml.YAMLError as exc:  # e.g. a reader error, which has a position but no mark
        raise InputError(
            f"malformed YAML: {visible(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)}",
            place=str(path),
            fix="check the file's syntax",
        ) from None
    data = {} if builder.documents == 0 else builder.root
    return SourceFile(path=path, text=text, data=data, lines=builder.lines)


def _misspelled(errors: list[Any]) -> Any | None:
    """An unknown key beside a missing one it resembles (`titel:` for `title:`): report the typo, not the
    absence, so the message points at the line the tester got wrong."""
    import difflib

    missing = {tuple(e["loc"][:-1]): str(e["loc"][-1]) for e in errors if e["type"] == "missing" and e["loc"]}
    for e in errors:
        if e["type"] == "extra_forbidden" and e["loc"]:
            wanted = missing.get(tuple(e["loc"][:-1]))
            if wanted and difflib.get_close_matches(str(e["loc"][-1]), [wanted], n=1, cutoff=0.6):
                return {**e, "did_you_mean": wanted}
    return None


def validation_error(src: SourceFile, exc: ValidationError, prefix: Loc = ()) -> InputError:
    errors = exc.errors(include_url=False)
    typo = _misspelled(errors)
    if typo is not None:
        loc_t: Loc = (*prefix, *(part for part in typo["loc"] if not _is_union_tag(part)))
        return InputError(f"unknown key `{visible(str(loc_t[-1]))}`", place=src.place(*loc_t),
                          fix=f"did you mean `{typo['did_you_mean']}`?")
    err = errors[0]
    loc: Loc = (*prefix, *(part for part in err["loc"] if not _is_union_tag(part)))
    where = visible(".".join(str(p) for p in loc)) or "(top level)"
    kind = err["type"]
    ctx_error = (err.get("ctx") or {}).get("error")
    if isinstance(ctx_error, InputError):
        return InputError(ctx_error.problem, place=src.place(*loc), fix=ctx_error.fix)
    if kind == "missing":
        problem, fix = f"`{where}` is missing", f"add `{loc[-1]}:` here" if loc else "add the missing key"
    elif kind == "extra_forbidden":
        problem, fix = (
            f"unknown key `{visible(str(loc[-1]))}`",
            "remove it, or check its spelling against `vtlab schema`",
        )
    else:
        problem, fix = f"`{where}`: {err['msg']}", "see `vtlab schema` for what this key takes"
    return InputError(problem, place=src.place(*loc), fix=fix)


def _is_union_tag(part: str | int) -> bool:
    return isinstance(part, str) and ("[" in part or part.startswith("function-"))
