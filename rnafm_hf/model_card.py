"""Model cards for converted folders, rendered from the templates in the repository's `model_cards/`."""

from __future__ import annotations

import string
from importlib import resources
from pathlib import Path

from .verification import ParityReport

TEMPLATE_NAMES = {"rna-fm": "rna-fm.md", "mrna-fm": "mrna-fm.md", "rna-fm-ss": "rna-fm-ss.md"}
DEFAULT_BASE_MODEL = "cuhkaih/rnafm"


def template_text(kind: str) -> str:
    """The card template for `kind`: packaged with a wheel, read from `model_cards/` in a source checkout."""
    packaged = resources.files("rnafm_hf") / "model_cards" / TEMPLATE_NAMES[kind]
    if packaged.is_file():
        return packaged.read_text(encoding="utf-8")
    return (Path(__file__).resolve().parents[1] / "model_cards" / TEMPLATE_NAMES[kind]).read_text(
        encoding="utf-8"
    )


def parity_section(report: ParityReport | None, reason: str | None = None) -> str:
    """The card's Parity section: the measured table, or why there is none."""
    if report is not None:
        return report.to_markdown()
    return (
        "Not measured when this folder was written"
        + (f" ({reason})" if reason else "")
        + ". Convert with the original `fm` package installed to have the converter measure and record the "
        "differences here."
    )


def render_model_card(
    kind: str,
    model_id: str,
    *,
    report: ParityReport | None = None,
    source: str = "",
    not_verified_reason: str | None = None,
    base_model: str = DEFAULT_BASE_MODEL,
) -> str:
    """The card for a converted folder: `model_id` in the usage code, the parity numbers and the source file."""
    return string.Template(template_text(kind)).substitute(
        model_id=model_id,
        parity=parity_section(report, not_verified_reason),
        source=source or "the original release",
        base_model=base_model,
    )
