"""Embedding runs written to a folder (`rnafm-hf embed`): atomic files, resume, data-parallel processes, reading back.

A folder holds `run.json` (the settings, model and input fingerprints), the arrays, and, once the run is complete,
`index.tsv` (one row per sequence in input order: id, file, length, embedded length, windows). Arrays are either
one `<id>.npy` per sequence (the original RNA-FM layout; ids made safe as file names) or `shard-*.safetensors`
files whose tensor names are the ids (for large runs: few files, memory-mapped reads, no pickle). Every file
appears under its final name only when complete, so a killed run never leaves a file that looks finished, and
running the same command again embeds only what is missing. The folder is an `OutputFolder` of the command: owned
(marker and ledger), locked while a run writes it.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .embedding import (
    DEFAULT_BATCH_TOKENS,
    Embedder,
    EmbeddingSettings,
    InvalidRecord,
    RunStatistics,
    SequenceRecord,
    check_batch_tokens,
    prepared,
    print_to_stderr,
)
from .fasta import safe_stems
from .options import DEFAULT_SHARD_MB, SHARD_SECONDS, STORE_FORMATS
from .output_folder import OutputFolder, input_fingerprint, model_fingerprint

RUN_FILE = "run.json"
INDEX_FILE = "index.tsv"
INDEX_HEADER = ("id", "file", "length", "embedded", "windows")
SHARD_PREFIX = "shard-"
PROCESS_GROUP_HOURS = 24


class NpyWriter:
    """One `<stem>.npy` per sequence, the original layout; stems are the ids made safe for file names."""

    def __init__(self, output: OutputFolder, ids: Sequence[str]):
        self.output = output
        self.files = {
            identifier: f"{stem}.npy" for identifier, stem in zip(ids, safe_stems(ids), strict=True)
        }

    def add(self, identifier: str, array: np.ndarray) -> None:
        def save(temporary: Path) -> None:
            with open(temporary, "wb") as handle:
                np.save(handle, array)

        self.output.write(self.files[identifier], save)

    def close(self) -> None:
        pass

    def locations(self) -> dict[str, str]:
        """id -> file name of every sequence already stored (by this command)."""
        owned = self.output.owned()
        return {
            identifier: name
            for identifier, name in self.files.items()
            if name in owned and (self.output.path / name).is_file()
        }


class SafetensorsWriter:
    """Arrays gathered into `shard-<process>-<n>.safetensors` files of about `shard_bytes` (or what
    `SHARD_SECONDS` of work gives, if less), tensor name = id."""

    def __init__(self, output: OutputFolder, process_index: int, shard_bytes: int):
        self.output = output
        folder = output.path
        self.prefix = f"{SHARD_PREFIX}{process_index:03d}-"
        self.shard_bytes = shard_bytes
        self.pending: dict[str, np.ndarray] = {}
        self.pending_bytes = 0
        self.opened = time.monotonic()
        numbers = [int(path.stem.rsplit("-", 1)[1]) for path in folder.glob(f"{self.prefix}*.safetensors")]
        self.next_number = max(numbers, default=0) + 1

    def shards(self) -> list[Path]:
        """The shards this command wrote (the folder may hold others of the same form)."""
        owned = self.output.owned()
        return sorted(
            path for path in self.output.path.glob(f"{SHARD_PREFIX}*.safetensors") if path.name in owned
        )

    def locations(self) -> dict[str, str]:
        from safetensors import safe_open

        found: dict[str, str] = {}
        for shard in self.shards():
            with safe_open(shard, framework="np") as handle:
                for identifier in handle.keys():  # noqa: SIM118 (safe_open is not a mapping)
                    if identifier in found:
                        raise RuntimeError(
                            f"{identifier!r} is stored twice, in {found[identifier]} and {shard.name}."
                        )
                    found[identifier] = shard.name
        return found

    def add(self, identifier: str, array: np.ndarray) -> None:
        if not self.pending:
            self.opened = time.monotonic()
        self.pending[identifier] = array
        self.pending_bytes += array.nbytes
        if self.pending_bytes >= self.shard_bytes or time.monotonic() - self.opened >= SHARD_SECONDS:
            self.flush()

    def flush(self) -> None:
        from safetensors.numpy import save_file

        if not self.pending:
            return
        name = f"{self.prefix}{self.next_number:05d}.safetensors"
        tensors = self.pending
        self.output.write(name, lambda temporary: save_file(tensors, os.fspath(temporary)))
        self.next_number += 1
        self.pending, self.pending_bytes = {}, 0

    def close(self) -> None:
        self.flush()


@dataclass
class EmbedResult:
    """What `embed_to_folder` did."""

    output_dir: Path
    embedded: int  # sequences embedded by this call (all processes)
    already_done: int  # sequences found complete from an earlier, interrupted call
    skipped: list[InvalidRecord] = field(default_factory=list)
    statistics: RunStatistics = field(default_factory=RunStatistics)


def _process_state(device: str | None):
    """accelerate's view of the processes (one, or those of `accelerate launch`) and this process's device."""
    from accelerate import PartialState

    on_cpu = device == "cpu" or (device is None and not torch.cuda.is_available())
    # Processes wait for each other while the first one clears or indexes the folder, and the last share may
    # take longer than the rest: far longer than the 10-minute default of a process group.
    state = PartialState(cpu=on_cpu, timeout=timedelta(hours=PROCESS_GROUP_HOURS))
    if state.num_processes > 1:
        if device not in (None, "cpu"):
            raise ValueError(
                "Under accelerate launch every process uses its own device; drop --device (or use --device cpu)."
            )
        device = "cpu" if on_cpu else str(state.device)
    return state, device


def embed_to_folder(
    inputs: str | os.PathLike | Mapping[str, str] | Iterable[str | tuple[str, str]],
    output_dir: str | os.PathLike,
    model="rna-fm",
    *,
    tokenizer=None,
    format: str = "npy",
    layers: int | Sequence[int] = -1,
    pooling: str = "none",
    long: str = "error",
    window_size: int | None = None,
    window_stride: int | None = None,
    merge: str = "mean",
    batch_tokens: int = DEFAULT_BATCH_TOKENS,
    device: str | None = None,
    dtype: str = "float32",
    skip_invalid: bool = False,
    overwrite: bool = False,
    shard_mb: int = DEFAULT_SHARD_MB,
    progress: bool = True,
    log: Callable[[str], None] | None = print_to_stderr,
) -> EmbedResult:
    """
    Embed every sequence of `inputs` (see [`rnafm_hf.embed`] for the inputs and options) into `output_dir`, as
    one `.npy` per sequence or as safetensors shards of about `shard_mb` MB (`format="safetensors"`), with
    `index.tsv` listing where each sequence is. Calling it again with the same inputs and settings finishes an
    interrupted run, embedding only what is missing, in the batches the first call planned; other settings need
    another folder or `overwrite=True` (which removes the files the earlier run wrote, and nothing else).
    Under `accelerate launch` each process embeds a disjoint share (whole batches, dealt so that the shares hold
    about as many tokens) into the same folder, with the numbers of a one-process run. Read the result with
    [`load_embeddings`].

    Example:

    ```python
    >>> from rnafm_hf import embed_to_folder, load_embeddings
    >>> embed_to_folder("example.fasta", "embeddings", "rna-fm")  # doctest: +SKIP
    >>> load_embeddings("embeddings")["hairpin"].shape  # doctest: +SKIP
    (56, 640)

    ```
    """
    if format not in STORE_FORMATS:
        raise ValueError(f"format must be one of {', '.join(STORE_FORMATS)}; got {format!r}.")
    if shard_mb <= 0:
        raise ValueError(f"shard_mb must be positive; got {shard_mb}.")
    settings = EmbeddingSettings.of(
        layers,
        pooling=pooling,
        long=long,
        window_size=window_size,
        window_stride=window_stride,
        merge=merge,
        dtype=dtype,
    )
    check_batch_tokens(batch_tokens)
    folder = Path(output_dir)
    state, device = _process_state(device)
    output = OutputFolder(folder, "embed", writer=state.process_index)
    output.check()  # a folder embed did not write is refused before the model loads
    main_log = log if state.is_main_process else None
    embedder, records, valid, skipped = prepared(
        inputs, model, tokenizer, settings, device, skip_invalid, main_log
    )
    run = {
        "model": os.fspath(model) if isinstance(model, (str, os.PathLike)) else type(model).__name__,
        "model_fingerprint": model_fingerprint(embedder.model),
        "input_fingerprint": input_fingerprint((record.id, record.sequence) for record in records),
        "format": format,
        # Everything that changes a number; the batches too, as they decide the floating-point sums.
        "settings": {**embedder.effective_settings(), "batch_tokens": batch_tokens},
    }
    npy = NpyWriter(output, [record.id for record in valid]) if format == "npy" else None
    planned = [RUN_FILE, INDEX_FILE, *(npy.files.values() if npy else ())]

    with ExitStack() as held:
        _take_folder(output, run, overwrite, planned, state, held)
        writer = npy or SafetensorsWriter(output, state.process_index, shard_mb * 2**20)
        completed = set(writer.locations())
        state.wait_for_everyone()  # every process has seen the same completed set before any writes
        skip = {index for index, record in enumerate(valid) if record.id in completed}
        units = [
            unit
            for unit in embedder.work_units(embedder.plan(valid, batch_tokens))
            if any(piece.record not in skip for batch in unit for piece in batch)
        ]
        share = [batch for unit in _dealt(units, state.num_processes)[state.process_index] for batch in unit]
        remaining = len(valid) - len(skip)
        if main_log is not None:
            if completed:
                main_log(f"Resuming: {len(completed)} of {len(valid)} sequences are already in {folder}.")
            if state.num_processes > 1:
                main_log(f"{state.num_processes} processes share {remaining} sequences.")

        statistics = RunStatistics()
        if remaining:
            description = (
                "Embedding" if state.num_processes == 1 else f"Embedding (process 1 of {state.num_processes})"
            )
            for record, array in embedder.run(
                valid, batch_tokens, progress and state.is_main_process, description, statistics, share, skip
            ):
                writer.add(record.id, array)
            writer.close()
            statistics = _combined(statistics, state)
        state.wait_for_everyone()
        if state.is_main_process:
            _write_index(output, valid, writer.locations(), embedder)
            if main_log is not None:
                main_log(statistics.summary() if remaining else f"Nothing left to embed in {folder}.")
        state.wait_for_everyone()
    return EmbedResult(folder, statistics.sequences, len(completed), skipped, statistics)


def _take_folder(
    output: OutputFolder, run: dict[str, Any], overwrite: bool, planned: Sequence[str], state, held: ExitStack
) -> None:
    """The main process locks the folder for the run (in `held`) and claims it: new, resumed, or replaced with
    `overwrite`; every process gets its outcome, an error included."""
    error = None
    if state.is_main_process:
        try:
            held.enter_context(output.locked())
            action = output.claim(run, overwrite, planned, ignore=("model",))  # the folder may be renamed
            if action != "resume" or not (output.path / RUN_FILE).is_file():
                output.write_text(RUN_FILE, json.dumps(run, indent=2) + "\n")
        except (
            Exception
        ) as raised:  # the others must hear of it, or they would wait for the main process forever
            error = raised
    if state.num_processes > 1:
        from accelerate.utils import broadcast_object_list

        shared = [error]
        broadcast_object_list(
            shared, from_process=0
        )  # also keeps the others waiting until the folder is ready
        error = shared[0]
    if error is not None:
        raise error


def _dealt(units: Sequence[list[list]], processes: int) -> list[list[list[list]]]:
    """Whole units of batches, each to the process with the fewest tokens so far (the first on ties): shares of
    equal work, each from short to long, the same in every process."""
    shares: list[list[list[list]]] = [[] for _ in range(processes)]
    loads = [0] * processes
    for unit in units:
        target = loads.index(min(loads))
        shares[target].append(unit)
        loads[target] += sum(piece.end - piece.start + 2 for batch in unit for piece in batch)
    return shares


def _combined(statistics: RunStatistics, state) -> RunStatistics:
    """The statistics of all processes added up (the slowest process's time)."""
    if state.num_processes == 1:
        return statistics
    from accelerate.utils import gather_object

    parts = gather_object([asdict(statistics)])
    total = RunStatistics()
    for part in parts:
        for key in ("sequences", "nucleotides", "tokens"):
            setattr(total, key, getattr(total, key) + part[key])
        total.seconds = max(total.seconds, part["seconds"])
    return total


def _write_index(
    output: OutputFolder, valid: Sequence[SequenceRecord], locations: Mapping[str, str], embedder: Embedder
) -> None:
    """`index.tsv`, written last: its presence means every sequence is stored exactly once."""
    missing = [record.id for record in valid if record.id not in locations]
    if missing:
        raise RuntimeError(
            f"{len(missing)} sequences are missing from {output.path} (first: {missing[:5]}); run the same command "
            "again to finish them."
        )
    lines = ["\t".join(INDEX_HEADER)]
    for record in valid:
        windows = len(embedder.windows_of(record))
        row = (
            record.id,
            locations[record.id],
            len(record.sequence),
            embedder.embedded_length(record),
            windows,
        )
        lines.append("\t".join(str(value) for value in row))
    output.write_text(INDEX_FILE, "\n".join(lines) + "\n")


class EmbeddingStore(Mapping[str, np.ndarray]):
    """
    The arrays of a finished `rnafm-hf embed` folder, by id, in input order: `store[id]`, `len(store)`,
    iteration over ids, `store.info(id)` (file, length, embedded length, windows) and `store.run` (the settings).
    Safetensors shards are memory-mapped and opened once.
    """

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        index = self.folder / INDEX_FILE
        if not index.is_file():
            raise FileNotFoundError(
                f"{self.folder} has no {INDEX_FILE}: no finished embedding run there (an interrupted run finishes "
                "when the same rnafm-hf embed command is run again)."
            )
        self.run = json.loads((self.folder / RUN_FILE).read_text(encoding="utf-8"))
        lines = index.read_text(encoding="utf-8").rstrip("\n").split("\n")  # ids may hold other line breaks
        self._rows: dict[str, dict[str, Any]] = {}
        for line in lines[1:]:
            identifier, name, length, embedded, windows = line.split("\t")
            self._rows[identifier] = {
                "file": name,
                "length": int(length),
                "embedded": int(embedded),
                "windows": int(windows),
            }
        self._handles: dict[str, Any] = {}

    def __getitem__(self, identifier: str) -> np.ndarray:
        name = self._rows[identifier]["file"]
        if name.endswith(".npy"):
            return np.load(self.folder / name)
        if name not in self._handles:
            from safetensors import safe_open

            self._handles[name] = safe_open(self.folder / name, framework="np")
        return self._handles[name].get_tensor(identifier)

    def __contains__(self, identifier: object) -> bool:
        return identifier in self._rows

    def __iter__(self) -> Iterator[str]:
        return iter(self._rows)

    def __len__(self) -> int:
        return len(self._rows)

    def info(self, identifier: str) -> dict[str, Any]:
        return dict(self._rows[identifier])

    def close(self) -> None:
        """Release the open shards (also on leaving a `with` block)."""
        self._handles.clear()

    def __enter__(self) -> EmbeddingStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def load_embeddings(folder: str | os.PathLike) -> EmbeddingStore:
    """Open a finished `rnafm-hf embed` output folder (either format) as a read-only mapping id -> array."""
    return EmbeddingStore(folder)
