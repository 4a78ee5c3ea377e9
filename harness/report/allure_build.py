"""`vtlab allure`: a static, single-file report of Allure results, built offline.

It reads an `allure-results` folder (written by allure-pytest with `--alluredir`, carrying vtlab's labels
and attachments) and writes one HTML file with everything inline: no script, no font, no analytics or
tracking code, nothing loaded from the network. Grouped like Allure's Behaviors view: epic -> feature ->
story, with each scenario's status, severity, links, steps and attachments.
"""

from __future__ import annotations

import base64
import html
import json
import re
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from harness.errors import InputError

_STATUS_COLOUR = {"passed": "#3c763d", "failed": "#a94442", "broken": "#b8860b", "skipped": "#777"}


MAX_ATTACHMENT_BYTES = 5 * 1024 * 1024  # an attachment larger than this is named, not embedded
MAX_RESULT_BYTES = 10 * 1024 * 1024  # a result file larger than this is not a result allure-pytest wrote
_TEXT_CHARS = 20000


def load_results(results: Path) -> list[dict[str, Any]]:
    if not results.is_dir():
        raise InputError(
            "no allure-results folder here",
            place=str(results),
            fix="run the scenarios with `--alluredir RUN_DIR/allure-results` (allure-pytest installed), "
            "or give the folder with --results",
        )
    out = []
    for p in sorted(results.glob("*-result.json")):
        if p.is_symlink() or not p.is_file() or p.stat().st_size > MAX_RESULT_BYTES:
            continue  # allure-pytest writes plain files of modest size; anything else is not its result
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as exc:
            raise InputError(
                f"not an Allure result file: {exc}",
                place=str(p),
                fix="remove it, or run the scenarios again into a fresh --alluredir",
            ) from exc
        if isinstance(data, dict):
            out.append(data)
    if not out:
        raise InputError(
            "the allure-results folder holds no results",
            place=str(results),
            fix="run the scenarios with --alluredir pointing at it",
        )
    return out


def attachment_file(results: Path, source: object) -> Path | None:
    """The attachment file named by `source`, only if it is a plain file directly inside `results` (as
    allure-pytest writes them): no path separators, no `..`, no symlink, nothing outside the folder."""
    if not isinstance(source, str) or not source or source in (".", "..") or "\0" in source:
        return None
    if "/" in source or "\\" in source:
        return None
    path = results / source
    try:
        if path.is_symlink() or not path.is_file():
            return None
        if path.resolve().parent != results.resolve():
            return None
    except (OSError, ValueError):
        return None
    return path


def _read_bounded(path: Path) -> bytes | None:
    """The file's bytes, or None when it is larger than MAX_ATTACHMENT_BYTES (read with that bound, so a
    file that grows meanwhile cannot make us read more)."""
    with path.open("rb") as f:
        data = f.read(MAX_ATTACHMENT_BYTES + 1)
    return None if len(data) > MAX_ATTACHMENT_BYTES else data


def _attachment(results: Path, a: Any) -> str:
    if not isinstance(a, dict):
        return ""
    source = a.get("source")
    name = html.escape(str(a.get("name") or source or "?"))
    src = attachment_file(results, source)
    if src is None:
        return f"<p><i>{name}: missing (or not a plain file inside the results folder)</i></p>"
    data = _read_bounded(src)
    if data is None:
        return f"<p><i>{name}: larger than {MAX_ATTACHMENT_BYTES // (1024 * 1024)} MB, not embedded</i></p>"
    kind = str(a.get("type", ""))
    if kind == "image/svg+xml" or (kind.startswith("image/") and re.fullmatch(r"image/[a-z0-9.+-]+", kind)):
        b64 = base64.b64encode(data).decode()
        return f'<figure><figcaption>{name}</figcaption><img alt="{name}" src="data:{kind};base64,{b64}"></figure>'
    text = data.decode("utf-8", errors="replace")
    if len(text) > _TEXT_CHARS:
        text = text[:_TEXT_CHARS] + "\n…"
    return f"<details><summary>{name}</summary><pre>{html.escape(text)}</pre></details>"


def _labels(r: dict[str, Any], name: str) -> list[str]:
    return [lab["value"] for lab in r.get("labels", []) if lab["name"] == name]


def _steps(steps: list[dict[str, Any]], results: Path) -> str:
    if not steps:
        return ""
    parts = ["<ol>"]
    for s in steps:
        parts.append(
            f"<li>{html.escape(s.get('name', ''))} – {html.escape(s.get('status', ''))}"
            + _steps(s.get("steps", []), results)
            + "".join(_attachment(results, a) for a in s.get("attachments", []))
            + "</li>"
        )
    parts.append("</ol>")
    return "".join(parts)


def render(results_dir: Path, title: str = "vtlab – Allure") -> str:
    results = load_results(results_dir)
    Tree = dict[str, dict[str, dict[str, list[dict[str, Any]]]]]
    tree: Tree = defaultdict(lambda: defaultdict(lambda: defaultdict(list)))
    for r in results:
        for epic in _labels(r, "epic") or ["(no epic)"]:
            for feature in _labels(r, "feature") or ["(no feature)"]:
                for story in _labels(r, "story") or ["(no story)"]:
                    tree[epic][feature][story].append(r)
    counts: dict[str, int] = defaultdict(int)
    for r in results:
        counts[r.get("status", "unknown")] += 1
    body = [
        f"<h1>{html.escape(title)}</h1>",
        "<p>"
        + " · ".join(
            f'<span style="color:{_STATUS_COLOUR.get(k, "#000")}">{html.escape(k)}: {v}</span>'
            for k, v in sorted(counts.items())
        )
        + "</p>",
    ]
    n = 0
    for epic in sorted(tree):
        body.append(f"<h2>{html.escape(epic)}</h2>")
        for feature in sorted(tree[epic]):
            body.append(f"<h3>{html.escape(feature)}</h3>")
            for story in sorted(tree[epic][feature]):
                body.append(f"<h4>{html.escape(story)}</h4>")
                for r in tree[epic][feature][story]:
                    n += 1
                    st = r.get("status", "unknown")
                    sev = ", ".join(_labels(r, "severity")) or "normal"
                    start = datetime.fromtimestamp(r.get("start", 0) / 1000, UTC).isoformat(timespec="seconds")
                    dur = (r.get("stop", 0) - r.get("start", 0)) / 1000
                    links = "".join(
                        f'<li><a href="{html.escape(lk["url"])}">{html.escape(lk.get("name") or lk["url"])}</a></li>'
                        for lk in r.get("links", [])
                        if not lk["url"].startswith(("http:", "https:", "//"))
                    )
                    msg = (r.get("statusDetails") or {}).get("message", "")
                    body.append(
                        f'<details class="case"><summary>'
                        f'<b style="color:{_STATUS_COLOUR.get(st, "#000")}">{html.escape(st)}</b> '
                        f'{html.escape(r.get("name", ""))} <span class="small">[{html.escape(sev)}]</span></summary>'
                        f'<p class="small">{html.escape(r.get("fullName", ""))} · {start} · {dur:.1f} s</p>'
                        + (f"<pre>{html.escape(msg)}</pre>" if msg else "")
                        + (f"<ul>{links}</ul>" if links else "")
                        + _steps(r.get("steps", []), results_dir)
                        + "".join(_attachment(results_dir, a) for a in r.get("attachments", []))
                        + "</details>"
                    )
    css = (
        "body{font-family:'DejaVu Sans',Arial,sans-serif;max-width:1000px;margin:1em auto;font-size:14px}"
        "h2{border-bottom:2px solid #234}pre{white-space:pre-wrap;background:#f5f5f5;padding:6px;font-size:12px}"
        "img{max-width:100%}.case{margin:4px 0 4px 1em}.small{color:#555;font-size:12px}"
    )
    return (
        f'<!DOCTYPE html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{css}</style></head><body>{''.join(body)}</body></html>"
    )


def build_allure(run_dir: Path, results: Path | None = None, out: Path | None = None) -> Path:
    results = results or run_dir / "allure-results"
    out = out or run_dir / "allure-report.html"
    page = render(results, title=f"vtlab – Allure – {run_dir.resolve().name}")
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.unlink(missing_ok=True)
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(out)  # a link planted at `out` is replaced, never followed
    return out
