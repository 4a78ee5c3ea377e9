"""YAML files with source positions, and pydantic validation errors turned into `file:line` messages."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from harness.errors import InputError, Place

Loc = tuple[str | int, ...]
M = TypeVar("M", bound=BaseModel)


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


def _walk(node: yaml.Node, loc: Loc, lines: dict[Loc, int]) -> Any:
    lines.setdefault(loc, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = yaml.safe_load(yaml.serialize(key_node)) if not isinstance(key_node, yaml.ScalarNode) else None
            if key is None:
                key = _scalar(key_node)
            lines[(*loc, key)] = key_node.start_mark.line + 1
            out[key] = _walk(value_node, (*loc, key), lines)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_walk(item, (*loc, i), lines) for i, item in enumerate(node.value)]
    return _scalar(node)


def _scalar(node: yaml.Node) -> Any:
    return yaml.safe_load(yaml.serialize(node))


def load_yaml(path: Path, what: str) -> SourceFile:
    """Read a YAML file; syntax errors name the line and column."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"{what} file not found", place=str(path), fix="check the path") from None
    except UnicodeDecodeError:
        raise InputError(f"{what} file is not UTF-8 text", place=str(path), fix="save it as UTF-8") from None
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        problem = f"malformed YAML: {exc.problem or exc.context}"
        raise InputError(
            problem,
            place=Place(str(path), line),
            fix="check indentation, colons and quotes on this line (a value with ': ' or '#' needs quotes)",
        ) from None
    lines: dict[Loc, int] = {}
    data = {} if node is None else _walk(node, (), lines)
    return SourceFile(path=path, text=text, data=data, lines=lines)


def validation_error(src: SourceFile, exc: ValidationError, prefix: Loc = ()) -> InputError:
    err = exc.errors(include_url=False)[0]
    loc: Loc = (*prefix, *(part for part in err["loc"] if not _is_union_tag(part)))
    where = ".".join(str(p) for p in loc) or "(top level)"
    kind = err["type"]
    ctx_error = (err.get("ctx") or {}).get("error")
    if isinstance(ctx_error, InputError):
        return InputError(ctx_error.problem, place=src.place(*loc), fix=ctx_error.fix)
    if kind == "missing":
        problem, fix = f"`{where}` is missing", f"add `{loc[-1]}:` here" if loc else "add the missing key"
    elif kind == "extra_forbidden":
        problem, fix = f"unknown key `{loc[-1]}`", "remove it, or check its spelling against `vtlab schema`"
    else:
        problem, fix = f"`{where}`: {err['msg']}", "see `vtlab schema` for what this key takes"
    return InputError(problem, place=src.place(*loc), fix=fix)


def _is_union_tag(part: str | int) -> bool:
    return isinstance(part, str) and ("[" in part or part.startswith("function-"))
