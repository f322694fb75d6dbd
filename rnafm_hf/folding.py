"""Fold every sequence of a FASTA file and write one structure file per sequence and format (`rnafm-hf fold`)."""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .drawing import PLOT_INSTALL, plot_structure
from .fasta import UNSAFE_NAME, read_fasta, safe_stems, unknown_letters
from .hub import check_model_name
from .model_loading import NonFiniteOutputError
from .pipeline import load_structure_pipeline
from .structure import FORMATS, SecondaryStructure
from .tokenization_rnafm import UnknownResidueWarning

if TYPE_CHECKING:
    from transformers import Pipeline

OUTPUT_FORMATS = (*FORMATS, "npy")
SUMMARY_NAME = "summary.tsv"
SS_CHECKPOINT = "RNA-FM-ResNet_PDB-All.pth"


@dataclass
class FoldedRecord:
    """One line of the summary: a FASTA record, what was written for it, or why it was skipped."""

    id: str
    length: int
    stem: str
    pairs: int | None = None
    multiplets: int | None = None
    dot_bracket: str | None = None
    skipped: str | None = None


def parse_formats(text: str) -> tuple[str, ...]:
    """`"ct, DBN"` -> `("ct", "dbn")`; `fold_fasta` checks the names."""
    return tuple(dict.fromkeys(name.strip().lower() for name in text.split(",") if name.strip()))


def _clear_output(output_dir: Path, overwrite: bool) -> None:
    """Refuse a non-empty folder, unless `overwrite` and it is an earlier `fold` output: then remove the files that
    run wrote (listed in its summary), so no stale structure outlives the new run."""
    if output_dir.exists() and not output_dir.is_dir():
        raise FileExistsError(f"{output_dir} exists and is not a folder; choose another --output.")
    if not output_dir.is_dir() or not any(output_dir.iterdir()):
        return
    if not overwrite:
        raise FileExistsError(
            f"{output_dir} is not empty; choose another --output or pass --overwrite to replace an earlier fold there."
        )
    summary = output_dir / SUMMARY_NAME
    if not summary.is_file():
        raise FileExistsError(
            f"{output_dir} has no {SUMMARY_NAME}: not written by rnafm-hf fold, so not replaced."
        )
    for line in summary.read_text(encoding="utf-8").splitlines()[1:]:
        stem = line.split("\t")[1] if line.count("\t") >= 1 else ""
        if not stem or UNSAFE_NAME.search(stem) or stem.startswith("."):
            continue  # only names fold itself writes: nothing outside the folder
        for suffix in (*OUTPUT_FORMATS, "png"):
            (output_dir / f"{stem}.{suffix}").unlink(missing_ok=True)
    summary.unlink()


def fold_fasta(
    fasta: str | os.PathLike,
    model: str | os.PathLike | Pipeline = "rna-fm-ss",
    output_dir: str | os.PathLike = "structures",
    *,
    formats: Sequence[str] = OUTPUT_FORMATS,
    threshold: float | None = None,
    canonical_only: bool = False,
    plot: bool = False,
    batch_size: int = 4,
    device: str | None = None,
    overwrite: bool = False,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> list[FoldedRecord]:
    """
    Predict the structure of every sequence in `fasta` with a converted secondary-structure folder and write, per
    sequence, `<id>.ct`, `.bpseq`, `.dbn` and `.npy` (the probability map), as `formats` selects, plus a `.png`
    heat map with `plot`, and `summary.tsv` for all. A sequence longer than the model reads, or empty, is
    reported by id and skipped; the others still fold. A folder that does not hold what the model needs raises
    `ModelFolderError`, and a map holding NaN or Inf raises `NonFiniteOutputError` naming the record (nothing is
    written for it, nor the summary). Returns the summary rows in FASTA order. `model` may also be
    a loaded `pipeline("rna-secondary-structure")`, which a server folds many requests with.

    Example:

    ```python
    >>> from rnafm_hf.folding import fold_fasta
    >>> rows = fold_fasta("example.fasta", "rna-fm-ss", "structures")  # doctest: +SKIP

    ```
    """
    from huggingface_hub.utils import tqdm
    from transformers import Pipeline

    output_dir = Path(output_dir)
    if not isinstance(model, Pipeline):
        model = check_model_name(model, SS_CHECKPOINT)  # loaded below, once the inputs are checked
    records = read_fasta(fasta)
    if not records:
        raise ValueError(f"{fasta} holds no sequences.")
    formats = tuple(formats)
    if not formats or (unknown := [name for name in formats if name not in OUTPUT_FORMATS]):
        raise ValueError(f"Unknown or no formats {list(formats)}; choose from {','.join(OUTPUT_FORMATS)}.")
    if threshold is not None and not 0.0 <= threshold <= 1.0:
        raise ValueError(f"--threshold is a probability, between 0 and 1; got {threshold}.")
    if plot:
        try:
            import matplotlib  # noqa: F401
        except ImportError as error:
            raise ImportError(f"--plot needs matplotlib: {PLOT_INSTALL}") from error
    _clear_output(output_dir, overwrite)
    fold = model if isinstance(model, Pipeline) else load_structure_pipeline(model, device=device)
    limit = fold.model.config.max_tokens - 2
    valid = fold.tokenizer.valid_letters

    rows, jobs = [], []
    for (identifier, raw), stem in zip(records, safe_stems([i for i, _ in records]), strict=True):
        sequence = "".join(raw.split()).upper().replace("T", "U")
        row = FoldedRecord(identifier, len(sequence), stem)
        rows.append(row)
        if not sequence:
            row.skipped = "empty sequence"
        elif len(sequence) > limit:
            row.skipped = f"{len(sequence)} nt, longer than the {limit} nt RNA-FM reads"
        if row.skipped:
            log(f"Skipping {identifier}: {row.skipped}.")
            continue
        if unknown := unknown_letters(sequence, valid):
            log(f"{identifier}: not in the nucleotide alphabet, read as <unk>: {unknown}.")
        jobs.append((row, sequence))

    output_dir.mkdir(parents=True, exist_ok=True)
    jobs.sort(key=lambda job: len(job[1]))  # similar lengths batch with little padding
    options: dict[str, Any] = {"canonical_only": canonical_only, "return_probabilities": True}
    if threshold is not None:
        options["threshold"] = threshold
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnknownResidueWarning)  # already reported above, by id
        results = fold((sequence for _, sequence in jobs), batch_size=batch_size, **options)
        # A plain generator: the pipeline's iterator has a __len__ that fails, which progress trackers call.
        results = (result for result in results)
        bar = tqdm(results, total=len(jobs), desc="Folding", unit="seq", disable=not progress)
        try:
            for (row, _), result in zip(jobs, bar, strict=True):
                _write_outputs(row, result, output_dir, formats, plot)
        except NonFiniteOutputError as error:  # it names the sequence; the record id says more
            identifier = next((row.id for row, sequence in jobs if sequence == error.sequence), None)
            if identifier is None:
                raise
            raise NonFiniteOutputError(f"record {identifier!r}", error.cause, error.sequence) from None
    _write_summary(rows, output_dir / SUMMARY_NAME)
    return rows


def _write_outputs(
    row: FoldedRecord, result: dict[str, Any], output_dir: Path, formats: Sequence[str], plot: bool
) -> None:
    structure = SecondaryStructure(result["sequence"], result["pairs"], row.id)
    row.pairs, row.multiplets, row.dot_bracket = (
        len(structure.pairs),
        len(result["multiplets"]),
        result["dot_bracket"],
    )
    for name in formats:
        path = output_dir / f"{row.stem}.{name}"
        if name == "npy":
            np.save(path, result["probabilities"].astype(np.float32))
        else:
            structure.write(path, name)
    if plot:
        plot_structure(result["probabilities"], structure, output_dir / f"{row.stem}.png")


def _write_summary(rows: Sequence[FoldedRecord], path: Path) -> None:
    lines = ["id\tfile\tlength\tpairs\tmultiplets\tdot_bracket\tskipped"]
    for row in rows:
        stem = None if row.skipped else row.stem
        values = [row.id, stem, row.length, row.pairs, row.multiplets, row.dot_bracket, row.skipped]
        lines.append("\t".join("" if value is None else str(value) for value in values))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def summary_table(rows: Sequence[FoldedRecord]) -> str:
    """The summary as an aligned text table, for the terminal."""
    header = ("id", "length", "pairs", "multiplets", "result")
    body = [
        (
            row.id,
            str(row.length),
            "-" if row.pairs is None else str(row.pairs),
            "-" if row.multiplets is None else str(row.multiplets),
            f"skipped: {row.skipped}" if row.skipped else f"{row.stem}.*",
        )
        for row in rows
    ]
    widths = [max(len(line[k]) for line in [header, *body]) for k in range(len(header))]
    return "\n".join(
        "  ".join(
            cell.ljust(width) if k in (0, 4) else cell.rjust(width)
            for k, (cell, width) in enumerate(zip(line, widths, strict=True))
        ).rstrip()
        for line in [header, *body]
    )
