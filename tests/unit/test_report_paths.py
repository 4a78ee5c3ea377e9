"""Names from input never become paths unchecked: plot file names from metric names and scenario ids,
the folder a plot is written into, and the files an Allure result may embed."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness.errors import InputError
from harness.report.allure_build import MAX_ATTACHMENT_BYTES, attachment_file, render
from harness.report.plots import Plot, safe_stem, write_plots

_FRAGMENTS = ["..", "/", "\\", "\x00", ".", "a", "Å", "\u202e", " ", "-", "~", "plots", "évidence", "\n", "A"]
hostile = st.one_of(
    st.sampled_from(
        [
            "..",
            ".",
            "/",
            "../../../../elsewhere/x",
            "/etc/passwd",
            "a/../../b",
            "x\x00y",
            "ü" * 300,
            "a" * 5000,
            "CON",
            "-rf",
            "alarm_latency",
            "Alarm_Latency",
            "alarm-latency",
        ]
    ),
    st.lists(st.sampled_from(_FRAGMENTS), min_size=1, max_size=30).map("".join),
    st.text(min_size=1, max_size=400),
)


@given(hostile)
@settings(max_examples=300)
def test_safe_stem_is_a_bounded_plain_file_name(name: str) -> None:
    stem = safe_stem(name)
    assert re.fullmatch(r"[a-z0-9_][a-z0-9_-]*", stem), stem
    assert len(stem) <= 48 + 11
    assert stem not in (".", "..")
    assert "/" not in stem and "\x00" not in stem


@given(hostile, hostile)
@settings(max_examples=300)
def test_different_names_never_share_a_file(a: str, b: str) -> None:
    if a != b:
        assert safe_stem(a) != safe_stem(b)


def test_plain_metric_names_keep_their_file_names() -> None:
    assert safe_stem("alarm_latency") == "alarm_latency"
    assert safe_stem("Alarm_Latency") != "alarm_latency"  # different names, different files
    assert safe_stem("../../../../elsewhere/x").startswith("elsewhere-x-")


@pytest.mark.parametrize("name", ["../x", "a/b", "", ".hidden", "x\x00", "A"])
def test_a_plot_refuses_an_unsafe_name(name: str) -> None:
    with pytest.raises(ValueError, match="unsafe plot name"):
        Plot(name, "t", "<svg/>")


def _tree(base: Path) -> set[Path]:
    return set(base.rglob("*"))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(scenario=hostile, metrics=st.lists(hostile, min_size=1, max_size=4, unique=True))
def test_hostile_names_write_nothing_outside_the_run_folder(
    tmp_path_factory: pytest.TempPathFactory, scenario: str, metrics: list[str]
) -> None:
    base = tmp_path_factory.mktemp("w")
    run = base / "a" / "b" / "c" / "d" / "run"
    run.mkdir(parents=True)
    before = _tree(base)
    plots = {scenario: [Plot(f"{safe_stem(m)}-distribution", m, f"<svg>{len(m)}</svg>") for m in metrics]}
    written = write_plots(run, plots)
    assert len(set(written)) == len(metrics)
    root = run.resolve()
    for p in _tree(base) - before:
        assert p.resolve().is_relative_to(root / "plots"), p
    for p in written:
        assert p.parent.parent == root / "plots"


def test_write_plots_refuses_a_planted_link(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    (run / "plots").symlink_to(outside)
    with pytest.raises(InputError, match="link"):
        write_plots(run, {"s": [Plot("x-distribution", "t", "<svg/>")]})
    assert list(outside.iterdir()) == []


def test_write_plots_replaces_a_planted_file_link_instead_of_following_it(tmp_path: Path) -> None:
    run = tmp_path / "run"
    folder = run / "plots" / safe_stem("s")
    folder.mkdir(parents=True)
    victim = tmp_path / "victim.txt"
    victim.write_text("untouched")
    (folder / "x-distribution.svg").symlink_to(victim)
    (path,) = write_plots(run, {"s": [Plot("x-distribution", "t", "<svg/>")]})
    assert victim.read_text() == "untouched"
    assert not path.is_symlink() and path.read_text() == "<svg/>"


# --- Allure attachments ------------------------------------------------------------------------------------
def _results(tmp_path: Path, attachments: list[dict[str, str]]) -> Path:
    results = tmp_path / "allure-results"
    results.mkdir()
    (results / "1-result.json").write_text(
        json.dumps(
            {"name": "s", "status": "passed", "start": 0, "stop": 1000, "labels": [], "attachments": attachments}
        )
    )
    return results


def test_allure_attachments_only_from_plain_files_inside_the_results_folder(tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("TOPSECRET-outside")
    results = _results(
        tmp_path,
        [
            {"name": "up", "source": "../secret.txt", "type": "text/plain"},
            {"name": "abs", "source": str(secret), "type": "text/plain"},
            {"name": "link", "source": "link.txt", "type": "text/plain"},
            {"name": "nul", "source": "ok.txt\x00", "type": "text/plain"},
            {"name": "sub", "source": "sub/inner.txt", "type": "text/plain"},
            {"name": "fine", "source": "ok.txt", "type": "text/plain"},
            {"name": "img", "source": "ok.txt", "type": 'image/png" onerror="alert(1)'},
        ],
    )
    (results / "ok.txt").write_text("inside-ok")
    (results / "link.txt").symlink_to(secret)
    (results / "sub").mkdir()
    (results / "sub" / "inner.txt").write_text("TOPSECRET-nested")
    page = render(results)
    assert "TOPSECRET" not in page
    assert page.count("inside-ok") == 2  # the plain file, and the bad image type shown as text
    assert 'onerror="alert' not in page
    for name in ("up", "abs", "link", "nul", "sub"):
        assert f"{name}: missing" in page
    assert attachment_file(results, "ok.txt") == results / "ok.txt"
    for bad in ("..", ".", "", "../secret.txt", "link.txt", "sub/inner.txt", 7, None):
        assert attachment_file(results, bad) is None


def test_allure_attachment_size_is_bounded(tmp_path: Path) -> None:
    results = _results(tmp_path, [{"name": "huge", "source": "huge.txt", "type": "text/plain"}])
    with (results / "huge.txt").open("wb") as f:
        f.truncate(MAX_ATTACHMENT_BYTES + 1)  # sparse: costs no disk
    page = render(results)
    assert "huge: larger than" in page and len(page) < 100_000


def test_allure_result_files_that_are_links_are_ignored(tmp_path: Path) -> None:
    results = _results(tmp_path, [])
    elsewhere = tmp_path / "other-result.json"
    elsewhere.write_text(json.dumps({"name": "SMUGGLED", "status": "passed"}))
    os.symlink(elsewhere, results / "2-result.json")
    assert "SMUGGLED" not in render(results)
