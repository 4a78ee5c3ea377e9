"""Render sample pages of the example run's acceptance report to PNG for docs/report-samples/.

    .venv/bin/python tools/render_report_samples.py [RUN_DIR] [--pages 1,2,3,5,-1] [--dpi 60]

Uses the run's report.pdf (rendering it first with `vtlab report` if it is missing) and pdftoppm from
poppler-utils. Page -1 is the last page (the sign-off page).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_dir", nargs="?", default=str(ROOT / "reports" / "latest"))
    ap.add_argument("--pages", default="1,2,3,4,5,-1", help="page numbers (1-based; -1 is the last)")
    ap.add_argument("--dpi", type=int, default=60)
    ap.add_argument("--out", default=str(ROOT / "docs" / "report-samples"))
    args = ap.parse_args(argv)
    if shutil.which("pdftoppm") is None:
        print("render_report_samples: pdftoppm is missing; install poppler-utils (tools/system-packages.txt)",
              file=sys.stderr)
        return 2
    run_dir = Path(args.run_dir)
    pdf = run_dir / "report.pdf"
    if not pdf.exists():
        from harness.report.commands import render_report

        render_report(run_dir, "nb")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("page-*.png"):
        old.unlink()
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(["pdftoppm", "-r", str(args.dpi), "-png", str(pdf), f"{tmp}/p"], check=True)
        pages = sorted(Path(tmp).glob("p-*.png"))
        wanted = []
        for token in args.pages.split(","):
            n = int(token)
            idx = n - 1 if n > 0 else len(pages) + n
            if 0 <= idx < len(pages) and idx not in wanted:
                wanted.append(idx)
        for idx in wanted:
            target = out / f"page-{idx + 1:02d}.png"
            shutil.copyfile(pages[idx], target)
            print(target)
    return 0


if __name__ == "__main__":
    sys.exit(main())
