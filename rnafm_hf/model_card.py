"""Model cards for converted folders, rendered from the templates in the repository's `model_cards/`."""

from __future__ import annotations

import string
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

from .configuration_rnafm import RnaFmConfig
from .options import DEFAULT_BASE_MODEL
from .verification import ParityReport

if TYPE_CHECKING:
    from .original_checkpoint import OriginalCheckpoint

TEMPLATE_NAMES = {"rna-fm": "rna-fm.md", "mrna-fm": "mrna-fm.md", "rna-fm-ss": "rna-fm-ss.md"}


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


# The marker rnafm_hf.stand_in leaves in a stand-in file's training arguments.
RANDOM_WEIGHTS_MARKER = "rnafm_hf_random_weights"
SIZE_FIELDS = {
    "num_hidden_layers": "layers",
    "hidden_size": "width",
    "num_attention_heads": "heads",
    "intermediate_size": "feed-forward width",
}
STRUCTURE_SIZE_FIELDS = {
    "ss_head_reduction": "head reduction",
    "ss_head_channels": "head channels",
    "ss_head_blocks": "residual blocks",
}


def _sizes(config: RnaFmConfig, kind: str) -> dict[str, int]:
    fields = {**SIZE_FIELDS, **(STRUCTURE_SIZE_FIELDS if kind == "rna-fm-ss" else {})}
    return {words: getattr(config, name) for name, words in fields.items()}


def _described(sizes: dict[str, int]) -> str:
    return ", ".join(f"{words} {value}" for words, value in sizes.items())


def identity_section(original: OriginalCheckpoint | None) -> str:
    """What the card can tell of the weights: a random stand-in (marked by our writer), a file whose sizes are not
    the released model's, or one with the released sizes (whose source hash tells whether it is the release)."""
    if original is None:
        return ""
    sizes = _sizes(original.config, original.kind)
    released = _sizes(
        RnaFmConfig.mrna_fm() if original.kind == "mrna-fm" else RnaFmConfig.rna_fm(), original.kind
    )
    if (original.args or {}).get(RANDOM_WEIGHTS_MARKER):
        return (
            "**Random weights: not the released model.** The source file is a stand-in with random weights, written "
            f"by {original.args[RANDOM_WEIGHTS_MARKER]} to try the tools offline; its outputs mean nothing. Its "
            f"sizes: {_described(sizes)}. The text below describes the released model."
        )
    if sizes != released:
        return (
            f"**Not the released model: other sizes.** This folder has {_described(sizes)}; the released model has "
            f"{_described(released)}. The text below describes the released model."
        )
    return (
        f"The source has the released model's sizes ({_described(sizes)}); its SHA-256 above tells whether it is "
        "the released file itself."
    )


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
        identity=identity_section(settings),
        parity=parity_section(report, not_verified_reason),
        source=source or "the original release",
        base_model=base_model,
    )
