"""Model cards for converted folders, rendered from the templates in the repository's `model_cards/`."""

from __future__ import annotations

import string
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

from .verification import ParityReport

if TYPE_CHECKING:
    from .original_checkpoint import OriginalCheckpoint

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


def settings_section(original: OriginalCheckpoint | None) -> str:
    """The card's Conversion settings: the values the file may not store, each with where it came from, and
    the ones that were assumed called out."""
    if original is None or not original.sources:
        return "Read from the original file."
    rows = ["| setting | value | source |", "|---|---|---|"]
    rows += [
        f"| `{name}` | `{getattr(original.config, name)}` | {source.replace('|', '/')} |"
        for name, source in original.sources.items()
    ]
    assumed = original.assumptions
    if assumed:
        rows += [
            "",
            "**Assumed, not read from any file:** "
            + " ".join(f"`{item.split(':', 1)[0]}`." for item in assumed)
            + " Numbers from this folder can differ from the original's if those assumptions are wrong; see the "
            "sources above for how to convert again with the right file.",
        ]
    return "\n".join(rows)


def render_model_card(
    kind: str,
    model_id: str,
    *,
    report: ParityReport | None = None,
    source: str = "",
    not_verified_reason: str | None = None,
    base_model: str = DEFAULT_BASE_MODEL,
    settings: OriginalCheckpoint | None = None,
) -> str:
    """The card for a converted folder: `model_id` in the usage code, the conversion settings and their sources,
    the parity numbers and the source file."""
    return string.Template(template_text(kind)).substitute(
        model_id=model_id,
        settings=settings_section(settings),
        parity=parity_section(report, not_verified_reason),
        source=source or "the original release",
        base_model=base_model,
    )
