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
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from harness.errors import InputError

_STATUS_COLOUR = {"passed": "#3c763d", "failed": "#a94442", "broken": "#b8860b", "skipped": "#777"}


def load_results(results: Path) -> list[dict[str, Any]]:
    if not results.is_dir():
        raise InputError("no allure-results folder here", place=str(results),
                         fix="run the scenarios with `--alluredir RUN_DIR/allure-results` (allure-pytest installed), "
                             "or give the folder with --results")
    out = [json.loads(p.read_text(encoding="utf-8")) for p in sorted(results.glob("*-result.json"))]
    if not out:
        raise InputError("the allure-results folder holds no results", place=str(results),
                         fix="run the scenarios with --alluredir pointing at it")
    return out


def _attachment(results: Path, a: dict[str, Any]) -> str:
    src = results / a["source"]
    if not src.is_file():
        return f"<p><i>{html.escape(a.get('name', ''))}: missing</i></p>"
    name = html.escape(a.get("name", a["source"]))
    kind = a.get("type", "")
    if kind == "image/svg+xml":
        svg = src.read_text(encoding="utf-8")
        data = base64.b64encode(svg.encode()).decode()
        return (f'<figure><figcaption>{name}</figcaption>'
                f'<img alt="{name}" src="data:image/svg+xml;base64,{data}"></figure>')
    if kind.startswith("image/"):
        data = base64.b64encode(src.read_bytes()).decode()
        return f'<figure><figcaption>{name}</figcaption><img alt="{name}" src="data:{kind};base64,{data}"></figure>'
    text = src.read_text(encoding="utf-8", errors="replace")
    if len(text) > 20000:
        text = text[:20000] + "\n…"
    return f"<details><summary>{name}</summary><pre>{html.escape(text)}</pre></details>"


def _labels(r: dict[str, Any], name: str) -> list[str]:
    return [lab["value"] for lab in r.get("labels", []) if lab["name"] == name]


def _steps(steps: list[dict[str, Any]], results: Path) -> str:
    if not steps:
        return ""
    parts = ["<ol>"]
    for s in steps:
        parts.append(f"<li>{html.escape(s.get('name', ''))} – {html.escape(s.get('status', ''))}"
                     + _steps(s.get("steps", []), results)
                     + "".join(_attachment(results, a) for a in s.get("attachments", [])) + "</li>")
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
    body = [f"<h1>{html.escape(title)}</h1>",
            "<p>" + " · ".join(f'<span style="color:{_STATUS_COLOUR.get(k, "#000")}">{html.escape(k)}: {v}</span>'
                               for k, v in sorted(counts.items())) + "</p>"]
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
                    links = "".join(f'<li><a href="{html.escape(lk["url"])}">'
                                    f'{html.escape(lk.get("name") or lk["url"])}</a></li>'
                                    for lk in r.get("links", []) if not lk["url"].startswith(("http:", "https:", "//")))
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
                        + "</details>")
    css = ("body{font-family:'DejaVu Sans',Arial,sans-serif;max-width:1000px;margin:1em auto;font-size:14px}"
           "h2{border-bottom:2px solid #234}pre{white-space:pre-wrap;background:#f5f5f5;padding:6px;font-size:12px}"
           "img{max-width:100%}.case{margin:4px 0 4px 1em}.small{color:#555;font-size:12px}")
    return (f'<!DOCTYPE html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"<style>{css}</style></head><body>{''.join(body)}</body></html>")


def build_allure(run_dir: Path, results: Path | None = None, out: Path | None = None) -> Path:
    results = results or run_dir / "allure-results"
    out = out or run_dir / "allure-report.html"
    out.write_text(render(results, title=f"vtlab – Allure – {run_dir.resolve().name}"), encoding="utf-8")
    return out
