"""The PDF (A4) of the report: WeasyPrint renders the same HTML, the evidence manifest is embedded as a
file, and two empty PAdES signature fields (customer, supplier) are placed on the sign-off page.

The embedded manifest lists the whole run folder, report.html included (hashed after it was written); the
PDF itself is in no manifest: its signatures vouch for it."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

from harness.report.manifest import MANIFEST_NAME

SIG_FIELDS = ("customer", "supplier")
_PX_TO_PT = 0.75  # CSS px (1/96 in) to PDF points (1/72 in)
_BOX_W_MM, _BOX_H_MM = 170.0, 38.0


def render_pdf(html: str, manifest: dict[str, Any], out: Path) -> Path:
    from weasyprint import HTML, Attachment

    doc = HTML(string=html, base_url=None).render()
    boxes: dict[str, tuple[int, tuple[float, float, float, float]]] = {}
    for page_no, page in enumerate(doc.pages):
        height_pt = page.height * _PX_TO_PT
        for name in SIG_FIELDS:
            pos = page.anchors.get(f"sig-{name}")
            if pos is None:
                continue
            x, y = pos[0] * _PX_TO_PT, pos[1] * _PX_TO_PT
            w, h = _BOX_W_MM / 25.4 * 72, _BOX_H_MM / 25.4 * 72
            boxes[name] = (page_no, (x, height_pt - y - h, x + w, height_pt - y))
    attachment = Attachment(
        string=json.dumps(manifest, indent=1, sort_keys=True),
        name=MANIFEST_NAME,
        description="vtlab: SHA-256 manifest of the evidence bundle",
    )
    raw = doc.write_pdf(attachments=[attachment])
    pdf = _add_signature_fields(raw, boxes)
    tmp = out.with_suffix(".pdf.tmp")
    tmp.write_bytes(pdf)
    tmp.replace(out)
    return out


def _add_signature_fields(pdf: bytes, boxes: dict[str, tuple[int, tuple[float, float, float, float]]]) -> bytes:
    from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
    from pyhanko.sign.fields import SigFieldSpec, append_signature_field

    w = IncrementalPdfFileWriter(io.BytesIO(pdf))
    last = -1
    for name in SIG_FIELDS:
        page, box = boxes.get(name, (last, (0.0, 0.0, 0.0, 0.0)))
        rect = (int(box[0]), int(box[1]), int(box[2]), int(box[3]))
        append_signature_field(w, SigFieldSpec(sig_field_name=name, on_page=page, box=rect))
    out = io.BytesIO()
    w.write(out)
    return out.getvalue()


def embedded_manifest(pdf: Path | bytes) -> dict[str, Any] | None:
    """The manifest embedded in a report PDF (its latest revision), or None."""
    from pyhanko.pdf_utils.reader import PdfFileReader

    data = pdf if isinstance(pdf, bytes) else pdf.read_bytes()
    r = PdfFileReader(io.BytesIO(data), strict=False)
    return _manifest_in(r.root)


def embedded_manifest_at(reader: Any, revision: int) -> dict[str, Any] | None:
    """The manifest as it stood in `revision` of the PDF (e.g. the revision a signature covers), or None."""
    return _manifest_in(reader.get_historical_root(revision))


def _manifest_in(root: Any) -> dict[str, Any] | None:
    try:
        names = root["/Names"]["/EmbeddedFiles"]["/Names"]
    except KeyError:
        return None
    for i in range(0, len(names), 2):
        if str(names[i]) == MANIFEST_NAME:
            spec = names[i + 1].get_object()
            stream = spec["/EF"]["/F"].get_object()
            data: dict[str, Any] = json.loads(stream.data.decode("utf-8"))
            return data
    return None
