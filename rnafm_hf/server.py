"""
The RNA-FM web app: embeddings and secondary structures in the browser, locally with `rnafm-hf serve` or unchanged
as a Hugging Face Space (`app.py`). Built on Gradio (`pip install 'rnafm-hf[serve]'`).

Sequences are pasted (FASTA, or one sequence per line) or uploaded as a FASTA file, within limits the page states
and the server enforces. Each action has its own queue with a concurrency limit, so a long embedding job never
holds up folding, and a request's size is capped, so none can hold its queue for long. Bad input is answered with
the messages the library gives.

Example (`RnaFmServer("rna-fm", "rna-fm-ss")` loads converted folders, as `rnafm-hf serve` does):

```python
>>> from rnafm_hf.server import ServerLimits, parse_pasted
>>> parse_pasted(">first RNA\\nACGU\\n>second\\nGGC")
[('first', 'ACGU'), ('second', 'GGC')]
>>> ServerLimits(max_sequences=10).describe()
'Up to 10 sequences and 20,000 nt per request; uploaded files up to 5 MB.'

```
"""

from __future__ import annotations

import atexit
import contextlib
import io
import math
import os
import shutil
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .embedding import POOLINGS, InvalidSequencesError, embed, load_encoder
from .fasta import DECOMPRESSION_ERRORS, read_fasta, safe_stems
from .folding import SS_CHECKPOINT
from .model_loading import NonFiniteOutputError
from .model_names import check_model_name
from .server_limits import ServerLimits
from .structure import SecondaryStructure

EXAMPLE_INPUT = """>1ehz_tRNA-Phe
GCGGAUUUAGCUCAGUUGGGAGAGCGCCAGACUGAAGAUCUGGAGGUCCUGUGUUCGAUCCACAGAAUUCGCACCA
>hairpin
GGGUGCGAUCAUACCAGCACUAAUGCCCUCCUGGGAAGUCCUCGUGUUGCACCCCU
"""
# Results stay downloadable this long; older request folders are removed when a new request comes.
KEEP_RESULTS_SECONDS = 3600
# The array in embeddings.npz that maps each FASTA id to the (safe) name its array is stored under.
NPZ_INDEX = "index"
MAX_LISTED_RENAMES = 5


class RequestError(ValueError):
    """Input the server refuses; the message says what to change. Shown to the user as it is."""


def parse_pasted(text: str) -> list[tuple[str, str]]:
    """`(id, sequence)` pairs from pasted text: FASTA when a line starts with `>`, else one sequence per line (ids
    `sequence_1`, `sequence_2`, ...)."""
    text = text.strip()
    if not text:
        return []
    if not any(line.lstrip().startswith(">") for line in text.splitlines()):
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        return [(f"sequence_{number}", line) for number, line in enumerate(lines, 1)]
    return parse_fasta(text.encode(), "The pasted text")


def parse_fasta(data: bytes, source: str) -> list[tuple[str, str]]:
    """`(id, sequence)` pairs from FASTA text; malformed text raises `RequestError` naming `source` and the line."""
    try:
        return read_fasta(io.BytesIO(data), name=source)
    except ValueError as error:
        raise RequestError(str(error)) from None


def _invalid_message(error: InvalidSequencesError, action: str, skip_invalid: bool) -> str:
    """The records that cannot be used, in the page's words (its checkbox, not a parameter)."""
    listed = "\n".join(f"  {item}" for item in error.invalid)
    advice = "Fix them and submit again." if skip_invalid else "Fix them, or tick 'Skip invalid sequences'."
    return f"{len(error.invalid)} input record(s) cannot be {action}:\n{listed}\n{advice}"


class RnaFmServer:
    """
    The work behind the page, free of Gradio: reads a request's sequences within the limits, embeds them into an
    `.npz` file, folds them into structure files and draws them. Models are loaded once, when the server starts.
    """

    def __init__(
        self,
        model: str | os.PathLike = "rna-fm",
        ss_model: str | os.PathLike | None = None,
        limits: ServerLimits | None = None,
        device: str | None = None,
    ):
        from .pipeline import load_structure_pipeline

        self.limits = limits or ServerLimits()
        self.model_name = os.fspath(model)
        self.encoder, self.tokenizer = load_encoder(model, device=device)
        self.encoder.eval()
        self.num_layers = self.encoder.config.num_hidden_layers
        self.fold_pipeline = None
        self.ss_model_name = None if ss_model is None else os.fspath(ss_model)
        if ss_model is not None:
            self.fold_pipeline = load_structure_pipeline(
                check_model_name(ss_model, SS_CHECKPOINT), device=device
            )
        self.workdir = Path(tempfile.mkdtemp(prefix="rnafm-hf-serve-"))
        atexit.register(shutil.rmtree, self.workdir, ignore_errors=True)

    # ---- input -----------------------------------------------------------------------------------------------

    def read_request(self, text: str | None, upload: str | os.PathLike | None) -> list[tuple[str, str]]:
        """The sequences of one request, pasted or uploaded (not both), within the limits."""
        text = (text or "").strip()
        if text and upload:
            raise RequestError("Paste sequences or upload a FASTA file, not both: clear one of them.")
        if upload:
            records = parse_fasta(self._read_upload(Path(upload)), Path(upload).name)
        elif len(text.encode()) > self.limits.max_upload_bytes:
            raise RequestError(
                f"The pasted text is over {self.limits.max_upload_mb:g} MB; upload it as a file within the limits, "
                "or run `rnafm-hf` locally for large sets."
            )
        else:
            records = parse_pasted(text)
        if not records:
            raise RequestError("No sequences: paste FASTA or one sequence per line, or upload a FASTA file.")
        if len(records) > self.limits.max_sequences:
            raise RequestError(
                f"The input holds {len(records):,} sequences; this server takes at most "
                f"{self.limits.max_sequences:,} per request. Split it, or run `rnafm-hf` locally for large sets."
            )
        total = sum(len("".join(sequence.split())) for _, sequence in records)
        if total > self.limits.max_nucleotides:
            raise RequestError(
                f"The input holds {total:,} nt in all; this server takes at most {self.limits.max_nucleotides:,} nt "
                "per request. Split it, or run `rnafm-hf` locally for large sets."
            )
        return records

    def _read_upload(self, path: Path) -> bytes:
        """The file's FASTA text, decompressed (.gz, .bz2, .xz) but never beyond the size limit: a small compressed
        file can hold gigabytes."""
        from xopen import xopen  # dnaio's own reader of compressed files

        over = (
            f"; this server takes files up to {self.limits.max_upload_mb:g} MB (uncompressed). Split it, or run "
            "`rnafm-hf` locally for large sets."
        )
        if path.stat().st_size > self.limits.max_upload_bytes:
            raise RequestError(f"{path.name} is {path.stat().st_size / 2**20:.2f} MB{over}")
        try:
            with xopen(path, "rb") as stream:
                data = stream.read(self.limits.max_upload_bytes + 1)
        except (OSError, *DECOMPRESSION_ERRORS) as error:
            raise RequestError(f"{path.name} cannot be read: {error}") from None
        if len(data) > self.limits.max_upload_bytes:
            raise RequestError(
                f"{path.name} decompresses to more than {self.limits.max_upload_mb:g} MB{over}"
            )
        return data

    def _request_folder(self) -> Path:
        """A fresh folder for one request's files; folders older than `KEEP_RESULTS_SECONDS` are removed."""
        cutoff = time.time() - KEEP_RESULTS_SECONDS
        for old in self.workdir.iterdir():
            with contextlib.suppress(FileNotFoundError):  # another request may be removing it too
                if old.stat().st_mtime < cutoff:
                    shutil.rmtree(old, ignore_errors=True)
        return Path(tempfile.mkdtemp(dir=self.workdir))

    # ---- embeddings ------------------------------------------------------------------------------------------

    def embed(
        self, records: list[tuple[str, str]], layer: int, pooling: str, skip_invalid: bool = False
    ) -> tuple[Path, str]:
        """Embed `records` into `embeddings.npz` (one float32 array per id) and a report of what was done."""
        if not 0 <= layer <= self.num_layers:
            raise RequestError(
                f"Layer {layer} does not exist: choose 0 (embeddings) to {self.num_layers} (last)."
            )
        if pooling not in POOLINGS:
            raise RequestError(f"Pooling {pooling!r} is unknown: choose one of {', '.join(POOLINGS)}.")
        messages: list[str] = []
        try:
            arrays = dict(
                embed(
                    records,
                    self.encoder,
                    tokenizer=self.tokenizer,
                    layers=layer,
                    pooling=pooling,
                    skip_invalid=skip_invalid,
                    log=messages.append,
                )
            )
        except InvalidSequencesError as error:
            raise RequestError(_invalid_message(error, "embedded", skip_invalid)) from None
        except NonFiniteOutputError as error:
            raise RequestError(str(error)) from None
        # Input order; records skipped as invalid (and reported) are left out.
        ids = [identifier for identifier in dict.fromkeys(i for i, _ in records) if identifier in arrays]
        names = safe_stems([NPZ_INDEX, *ids])[1:]  # safe file names, none taken from the index
        path = self._request_folder() / "embeddings.npz"
        with zipfile.ZipFile(path, "w") as archive:  # np.savez, but with keys such as "file" too
            for identifier, name in zip(ids, names, strict=True):
                with archive.open(f"{name}.npy", "w", force_zip64=True) as member:
                    np.lib.format.write_array(member, arrays[identifier], allow_pickle=False)
            with archive.open(f"{NPZ_INDEX}.npy", "w") as member:
                index = np.array(list(zip(ids, names, strict=True)), dtype=str).reshape(-1, 2)
                np.lib.format.write_array(member, index, allow_pickle=False)
        shape = "(hidden,)" if pooling != "none" else "(length, hidden)"
        messages.append(
            f"{len(arrays)} arrays {shape}, layer {layer}, pooling {pooling}: np.load('embeddings.npz')[name]; "
            f"its {NPZ_INDEX!r} array lists (id, name) in input order."
        )
        if renamed := [(i, name) for i, name in zip(ids, names, strict=True) if i != name]:
            listed = ", ".join(f"{i!r} as {name!r}" for i, name in renamed[:MAX_LISTED_RENAMES])
            more = (
                f" and {len(renamed) - MAX_LISTED_RENAMES} more" if len(renamed) > MAX_LISTED_RENAMES else ""
            )
            messages.append(f"Stored under safe file names: {listed}{more}.")
        return path, "\n".join(messages)

    # ---- secondary structure ---------------------------------------------------------------------------------

    def fold(
        self,
        records: list[tuple[str, str]],
        canonical_only: bool = False,
        threshold: float | None = None,
        skip_invalid: bool = False,
    ) -> FoldResult:
        """Fold `records` into `.ct`, `.bpseq`, `.dbn` and `.npy` files per sequence, as `rnafm-hf fold` does, with
        its input rules: records that cannot be folded are listed, or skipped with `skip_invalid`."""
        from .folding import fold_fasta, summary_table

        if self.fold_pipeline is None:
            raise RequestError("This server has no secondary-structure model: start it with --ss-model DIR.")
        self._check_fold_cost(records)
        folder = self._request_folder()
        messages: list[str] = []
        try:
            rows = fold_fasta(
                records,  # as they are: the input rules see the very ids and sequences
                self.fold_pipeline,
                folder / "structures",
                threshold=threshold,
                canonical_only=canonical_only,
                skip_invalid=skip_invalid,
                log=messages.append,
            )
        except InvalidSequencesError as error:
            raise RequestError(_invalid_message(error, "folded", skip_invalid)) from None
        except ValueError as error:
            raise RequestError(str(error)) from None
        folded = [row for row in rows if row.skipped is None]
        if not folded:
            raise RequestError("Nothing could be folded:\n" + "\n".join(messages))
        archive = folder / "structures.zip"
        with zipfile.ZipFile(archive, "w") as bundle:
            for path in sorted((folder / "structures").iterdir()):
                if not path.name.startswith("."):  # fold's own bookkeeping (.rnafm-hf.*) stays out
                    bundle.write(path, path.name)
        report = "\n".join([*messages, summary_table(rows)])
        return FoldResult(folder / "structures", archive, {row.id: row.stem for row in folded}, report)

    @property
    def longest_fold(self) -> int:
        """The longest sequence the structure model folds, in nt; longer ones are skipped."""
        return self.fold_pipeline.model.config.max_tokens - 2

    @property
    def longest_within_fold_cost(self) -> int:
        """The longest sequence one fold request may hold alone."""
        return min(math.isqrt(self.limits.max_fold_cost), self.longest_fold)

    def _check_fold_cost(self, records: list[tuple[str, str]]) -> None:
        """Refuse, before any compute, a fold request over `max_fold_cost`: the sum of its sequences' squared
        lengths (those too long to fold are skipped, and cost nothing)."""
        lengths = (len("".join(sequence.split())) for _, sequence in records)
        cost = sum(length**2 for length in lengths if length <= self.longest_fold)
        if cost > self.limits.max_fold_cost:
            raise RequestError(
                f"Folding these sequences costs {cost:,} nt² (the sum of their squared lengths: the pair map of "
                f"an L-nt sequence holds L² pairs); this server folds at most {self.limits.max_fold_cost:,} nt² "
                f"per request, e.g. one sequence of up to {self.longest_within_fold_cost:,} nt. Split it, or run "
                "`rnafm-hf fold` locally for large sets."
            )

    def draw(self, result: FoldResult, identifier: str) -> dict[str, Any]:
        """The structure of one folded sequence: dot-bracket, heat map and arc diagram PNGs, and its files."""
        from .drawing import plot_arcs, plot_structure

        if identifier not in result.stems:
            raise RequestError(f"No folded sequence {identifier!r} in this result; choose one of the list.")
        stem = result.stems[identifier]
        files = {suffix: result.folder / f"{stem}.{suffix}" for suffix in ("ct", "bpseq", "dbn", "npy")}
        if not files["ct"].is_file():
            raise RequestError("These results have expired; submit the sequences again.")
        structure = SecondaryStructure.read(files["ct"])
        structure = SecondaryStructure(structure.sequence, structure.pairs, identifier)
        heat_map, arcs = result.folder / f"{stem}.heatmap.png", result.folder / f"{stem}.arcs.png"
        if not heat_map.is_file():
            plot_structure(np.load(files["npy"]), structure, heat_map)
            plot_arcs(structure, arcs)
        return {"structure": structure, "heat_map": heat_map, "arcs": arcs, "files": list(files.values())}


@dataclass(frozen=True)
class FoldResult:
    """One fold request's output: the structure files, all of them zipped, and the file stem of each folded id."""

    folder: Path
    archive: Path
    stems: dict[str, str]
    report: str

    def dot_brackets(self) -> str:
        """All folded sequences in dot-bracket (`.dbn`) form, in input order."""
        return "".join((self.folder / f"{stem}.dbn").read_text() for stem in self.stems.values())
