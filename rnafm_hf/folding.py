"""Fold every sequence of a FASTA file and write one structure file per sequence and format (`rnafm-hf fold`).

The output folder is an `OutputFolder` of the command (owned, locked while a run writes it); every file appears
under its final name only when complete, `summary.tsv` last, and running the same command again after a kill or a
failure folds only the records whose files are not all there, in the batches the first run planned.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from itertools import chain
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .drawing import PLOT_INSTALL, plot_structure
from .fasta import safe_stems
from .model_loading import NonFiniteOutputError
from .model_names import check_model_name
from .options import FOLD_OUTPUT_FORMATS
from .output_folder import Journal, OutputFolder, input_fingerprint, model_fingerprint
from .pipeline import load_structure_pipeline
from .records import checked, read_inputs
from .structure import BRACKETS, SecondaryStructure

if TYPE_CHECKING:
    from transformers import Pipeline

OUTPUT_FORMATS = FOLD_OUTPUT_FORMATS
SUMMARY_NAME = "summary.tsv"
PLOT_FORMAT = "png"
FINISHED = "records"  # the journal of finished records: their summary rows, for a resumed run
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


def fold_fasta(
    fasta: str | os.PathLike | Mapping[str, str] | Iterable[tuple[str, str]],
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
    skip_invalid: bool = False,
    long: str = "error",
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> list[FoldedRecord]:
    """
    Predict the structure of every sequence in `fasta` (a FASTA path, `-` for standard input, or records as
    `rnafm_hf.embed` takes them) with a converted secondary-structure folder and write, per
    sequence, `<id>.ct`, `.bpseq`, `.dbn` and `.npy` (the probability map), as `formats` selects, plus a `.png`
    heat map with `plot`, and `summary.tsv` for all, last. Records are checked before any compute by the rules
    `embed` applies (`rnafm_hf.records`): duplicate ids, empty records, letters outside the alphabet and sequences
    longer than the model reads are listed (number, id, position) in one `InvalidSequencesError`, or, with
    `skip_invalid`, skipped, logged and listed in the summary. A folder that does not hold what the model needs raises
    `ModelFolderError`, and a map holding NaN or Inf raises `NonFiniteOutputError` naming the record (nothing is
    written for it, nor the summary). Returns the summary rows in FASTA order. `model` may also be
    a loaded `pipeline("rna-secondary-structure")`, which a server folds many requests with. With
    `long="window"`, sequences longer than the model reads are folded from windowed embeddings with the pair head in
    tiles (`rnafm_hf.long_folding`, which says what is approximated), one at a time after the others.

    Calling it again with the same inputs and settings (the model's weights, formats, threshold, canonical_only,
    plot and batch_size) finishes an interrupted run; other settings need another folder or `overwrite=True`,
    which removes the files the earlier run wrote and nothing else. A folder that `fold` did not write is refused.

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
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1; got {batch_size}.")
    if long not in ("error", "window"):
        raise ValueError(f"long is 'error' or 'window'; got {long!r}.")
    records = read_inputs(fasta)
    if not records:
        where = "Standard input" if isinstance(fasta, str) and fasta == "-" else "The input"
        raise ValueError(f"{where} holds no sequences.")
    formats = tuple(formats)
    if not formats or any(name not in OUTPUT_FORMATS for name in formats):
        raise ValueError(f"Unknown or no formats {list(formats)}; choose from {','.join(OUTPUT_FORMATS)}.")
    if threshold is not None and not 0.0 <= threshold <= 1.0:
        raise ValueError(f"--threshold is a probability, between 0 and 1; got {threshold}.")
    if plot:
        try:
            import matplotlib  # noqa: F401
        except ImportError as error:
            raise ImportError(f"--plot needs matplotlib: {PLOT_INSTALL}") from error
    output = OutputFolder(output_dir, "fold")
    output.check()  # a folder fold did not write is refused before the model loads
    fold = model if isinstance(model, Pipeline) else load_structure_pipeline(model, device=device)
    rules = fold.window_rules if long == "window" else fold.rules
    valid, invalid = checked(rules, records, skip_invalid, log, "folded", "skip them with skip_invalid=True")
    reasons = {item.number: item.reason for item in invalid}
    sequences = {record.number: record.sequence for record in valid}
    rows, jobs = [], []
    for record, stem in zip(records, safe_stems([record.id for record in records]), strict=True):
        row = FoldedRecord(record.id, len(sequences.get(record.number, record.sequence)), stem)
        row.skipped = reasons.get(record.number)
        rows.append(row)
        if row.skipped is None:
            jobs.append((row, sequences[record.number]))

    jobs.sort(key=lambda job: len(job[1]))  # similar lengths batch with little padding
    options: dict[str, Any] = {"canonical_only": canonical_only, "return_probabilities": True}
    if threshold is not None:
        options["threshold"] = threshold
    settings = {
        "model": os.fspath(model) if isinstance(model, (str, os.PathLike)) else type(fold).__name__,
        "model_fingerprint": model_fingerprint(fold.model),
        "input_fingerprint": input_fingerprint((record.id, record.sequence) for record in records),
        "formats": list(formats),
        "threshold": fold.model.config.ss_threshold if threshold is None else threshold,
        "canonical_only": canonical_only,
        "plot": plot,
        "batch_size": batch_size,  # the batches' padding may change the last bits of a map
        **({"long": long} if long != "error" else {}),  # as before for runs without it
    }
    suffixes = [*formats, *([PLOT_FORMAT] if plot else [])]
    planned = [SUMMARY_NAME, *(f"{row.stem}.{suffix}" for row, _ in jobs for suffix in suffixes)]
    with output.locked():
        output.claim(settings, overwrite, planned, ignore=("model",))  # the model folder may be renamed
        finished = output.journal(FINISHED)
        done = _finished_rows(finished, output_dir, suffixes)
        batches = [jobs[start : start + batch_size] for start in range(0, len(jobs), batch_size)]
        # Whole batches, as planned: a batch folds the same alone as after the others.
        todo = [job for batch in batches if any(row.stem not in done for row, _ in batch) for job in batch]
        for row, _ in jobs:
            if row.stem in done:
                row.pairs, row.multiplets, row.dot_bracket = done[row.stem]
        if done:
            log(f"Resuming: {len(done)} of {len(jobs)} sequences are already in {output_dir}.")
        if todo:  # the run is not complete until the summary is written again
            (output_dir / SUMMARY_NAME).unlink(missing_ok=True)
        limit = fold.model.config.max_tokens - 2
        short = [sequence for _, sequence in todo if len(sequence) <= limit]
        # Sorted by length, so the long ones come last, each folded alone by windows.
        results = chain(
            # A generator in, so that results stream out (a list would be folded whole before the first write).
            fold((sequence for sequence in short), batch_size=batch_size, **options) if short else [],
            (fold(sequence, long="window", **options) for _, sequence in todo[len(short) :]),
        )
        bar = tqdm(results, total=len(todo), desc="Folding", unit="seq", disable=not progress)
        try:
            for (row, _), result in zip(todo, bar, strict=True):
                if row.stem not in done:
                    _write_outputs(row, result, output, formats, plot)
                    finished.append([row.stem, row.pairs, row.multiplets, row.dot_bracket])
        except NonFiniteOutputError as error:  # it names the sequence; the record id says more
            identifier = next((row.id for row, sequence in jobs if sequence == error.sequence), None)
            if identifier is None:
                raise
            raise NonFiniteOutputError(f"record {identifier!r}", error.cause, error.sequence) from None
        _write_summary(rows, output)
    return rows


def _finished_rows(
    finished: Journal, output_dir: Path, suffixes: Sequence[str]
) -> dict[str, tuple[int, int, str]]:
    """stem -> (pairs, multiplets, dot-bracket) of the records an earlier run finished whose files are all there
    (each record's line is appended once its files are in place)."""
    done = {}
    for entry in finished.read():
        if isinstance(entry, list) and len(entry) == 4 and isinstance(entry[0], str):
            stem, pairs, multiplets, dot_bracket = entry
            if all((output_dir / f"{stem}.{suffix}").is_file() for suffix in suffixes):
                done[stem] = (pairs, multiplets, dot_bracket)
    return done


def _write_outputs(
    row: FoldedRecord, result: dict[str, Any], output: OutputFolder, formats: Sequence[str], plot: bool
) -> None:
    """The record's files, each written whole under a temporary name and then renamed."""
    structure = SecondaryStructure(result["sequence"], result["pairs"], row.id)
    row.pairs, row.multiplets, row.dot_bracket = (
        len(structure.pairs),
        len(result["multiplets"]),
        result["dot_bracket"],
    )
    for name in formats:
        if name == "dbn" and result["dot_bracket"] is None:
            raise ValueError(
                f"record {row.id!r}: its structure ({len(structure.pairs)} pairs) has more than {len(BRACKETS)} "
                "pseudoknot levels, which dot-bracket cannot write: leave dbn out of formats (ct and bpseq write "
                "any structure), or raise the threshold to keep fewer, surer pairs."
            )
        if name == "npy":
            probabilities = result["probabilities"].astype(np.float32)
            output.write(f"{row.stem}.npy", partial(_save_npy, array=probabilities))
        else:
            output.write_text(f"{row.stem}.{name}", structure.to_text(name))
    if plot:
        output.write(
            f"{row.stem}.{PLOT_FORMAT}",
            lambda temporary: plot_structure(result["probabilities"], structure, temporary),
        )


def _save_npy(path: Path, array: np.ndarray) -> None:
    with open(path, "wb") as handle:  # np.save would add .npy to a temporary name
        np.save(handle, array)


def _write_summary(rows: Sequence[FoldedRecord], output: OutputFolder) -> None:
    lines = ["id\tfile\tlength\tpairs\tmultiplets\tdot_bracket\tskipped"]
    for row in rows:
        stem = None if row.skipped else row.stem
        values = [row.id, stem, row.length, row.pairs, row.multiplets, row.dot_bracket, row.skipped]
        lines.append("\t".join("" if value is None else str(value) for value in values))
    output.write_text(SUMMARY_NAME, "\n".join(lines) + "\n")


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
