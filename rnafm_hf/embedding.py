"""Embed many sequences: input checks, token-budget batching, long-sequence windows and pooling (`rnafm_hf.embed`).

The per-sequence result is a float32 array: (L, hidden) per-residue vectors, `<cls>` and `<eos>` removed (L
nucleotides for RNA-FM, L codons for mRNA-FM), or a (hidden,) vector with pooling; with several layers, a leading
layer axis in the order asked for.
"""

from __future__ import annotations

import ctypes
import os
import sys
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from itertools import accumulate, chain

import numpy as np
import torch

from .devices import checked_device
from .model_loading import NonFiniteOutputError, is_finite, load_model, non_finite_cause
from .model_names import check_model_name, model_location
from .options import COMPUTE_DTYPES, DEFAULT_BATCH_TOKENS, LONG_MODES, MERGES, POOLINGS
from .records import (  # noqa: F401 (InvalidSequencesError and read_inputs: imported from here by callers)
    InputRules,
    InvalidRecord,
    InvalidSequencesError,
    SequenceRecord,
    checked,
    read_inputs,
)

DTYPES = {name: getattr(torch, name) for name in COMPUTE_DTYPES}
FLOAT16_REMEDY = "embed with dtype='bfloat16' or dtype='float32'."


@dataclass(frozen=True)
class EmbeddingSettings:
    """What is computed for each sequence; two runs with equal settings give the same arrays."""

    layers: tuple[int, ...] = (-1,)
    pooling: str = "none"
    long: str = "error"
    window_size: int | None = None
    window_stride: int | None = None
    merge: str = "mean"
    dtype: str = "float32"

    def __post_init__(self) -> None:
        for name, value, allowed in (
            ("pooling", self.pooling, POOLINGS),
            ("long", self.long, LONG_MODES),
            ("merge", self.merge, MERGES),
            ("dtype", self.dtype, tuple(DTYPES)),
        ):
            if value not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(allowed)}; got {value!r}.")
        if not self.layers:
            raise ValueError("layers is empty; name at least one layer, e.g. -1 for the last.")
        if self.long != "window" and (self.window_size is not None or self.window_stride is not None):
            raise ValueError("window_size and window_stride apply to long='window' only.")

    @classmethod
    def of(cls, layers: int | Sequence[int] = -1, **options) -> EmbeddingSettings:
        """Settings from the keyword arguments of `embed`; one layer may be given as an int."""
        return cls(layers=(layers,) if isinstance(layers, int) else tuple(layers), **options)


@dataclass(frozen=True)
class Piece:
    """A stretch of one record fed to the model as a sequence of its own: the whole record, or one window."""

    record: int  # index into the job's records
    start: int  # in tokens (nucleotides or codons)
    end: int
    text: str


@dataclass
class RunStatistics:
    """Counts for the closing report: sequences, residues, model tokens, time."""

    sequences: int = 0
    nucleotides: int = 0  # embedded ones (a truncated sequence counts what was kept)
    tokens: int = 0  # computed by the model, <cls> and <eos> included (there is no padding)
    seconds: float = 0.0

    def summary(self) -> str:
        rate = self.nucleotides / self.seconds if self.seconds else float("nan")
        per_second = self.sequences / self.seconds if self.seconds else float("nan")
        return (
            f"Embedded {self.sequences} sequences ({self.nucleotides} nt, {self.tokens} model tokens) in "
            f"{self.seconds:.1f} s: {per_second:.1f} sequences/s, {rate:.0f} nt/s."
        )


@cache
def _glibc_malloc_trim() -> Callable[[int], int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None).malloc_trim  # glibc only (absent from musl)
    except (OSError, AttributeError):
        return None


def release_freed_memory() -> None:
    """Hand the memory freed by a batch back to the system. Batches of other sizes otherwise leave glibc's heap
    fragmented, and a whole-sample CPU run grew to 1.5-1.8 GB resident where 1.1 GB is in use (measured with the
    benchmark); trimming once per batch costs no measurable time."""
    trim = _glibc_malloc_trim()
    if trim is not None:
        trim(0)


def check_batch_tokens(batch_tokens: int) -> None:
    if batch_tokens < 1:
        raise ValueError(f"batch_tokens must be positive; got {batch_tokens}.")


def print_to_stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def plan_windows(length: int, size: int, stride: int) -> list[tuple[int, int]]:
    """
    `[start, end)` windows of `size` tokens every `stride` tokens, plus one ending at `length` (unless the last
    already does): every position is covered, by at most `ceil(size / stride) + 1` windows. A sequence of `size` or fewer tokens is one window.

    ```python
    >>> plan_windows(10, 4, 3)
    [(0, 4), (3, 7), (6, 10)]
    >>> plan_windows(11, 4, 3)
    [(0, 4), (3, 7), (6, 10), (7, 11)]

    ```
    """
    if not 1 <= stride <= size:
        raise ValueError(f"The window stride must be between 1 and the window size ({size}); got {stride}.")
    if length <= size:
        return [(0, length)]
    starts = [*range(0, length - size, stride), length - size]
    return [(start, start + size) for start in starts]


def stitch_windows(
    windows: Sequence[tuple[int, int]], vectors: Sequence[np.ndarray], length: int, merge: str = "mean"
) -> np.ndarray:
    """
    Per-position vectors of a whole sequence from those of its windows (each `(..., end - start, hidden)`).

    `merge="mean"`: each position is the average over the windows that contain it. `merge="center"`: each position
    comes from the window in which it is farthest from an edge (the most context on its shorter side; ties go to
    the earlier window), so no vector is taken near a window's cut unless the sequence's own end is there.
    """
    leading = vectors[0].shape[:-2]
    hidden = vectors[0].shape[-1]
    if merge == "mean":
        total = np.zeros((*leading, length, hidden), dtype=np.float64)
        count = np.zeros(length, dtype=np.int64)
        for (start, end), vector in zip(windows, vectors, strict=True):
            total[..., start:end, :] += vector
            count[start:end] += 1
        return (total / count[:, None]).astype(np.float32)
    if merge != "center":
        raise ValueError(f"merge must be one of {', '.join(MERGES)}; got {merge!r}.")
    positions = np.arange(length)
    context = np.full((len(windows), length), -1, dtype=np.int64)
    for k, (start, end) in enumerate(windows):
        inside = slice(start, end)
        # Distance to the nearer cut; a window edge at the sequence's own end is no cut.
        left = positions[inside] - start if start > 0 else np.full(end - start, length)
        right = end - 1 - positions[inside] if end < length else np.full(end - start, length)
        context[k, inside] = np.minimum(left, right)
    best = context.argmax(axis=0)
    result = np.empty((*leading, length, hidden), dtype=np.float32)
    for k, (start, _) in enumerate(windows):
        chosen = np.flatnonzero(best == k)
        result[..., chosen, :] = vectors[k][..., chosen - start, :]
    return result


class Embedder:
    """
    A loaded RNA-FM or mRNA-FM encoder with its tokenizer and the settings of a run: checks inputs, plans pieces
    and batches, runs the model and returns finished per-sequence arrays.
    """

    def __init__(
        self, model, tokenizer, settings: EmbeddingSettings, device: str | torch.device | None = None
    ):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.settings = settings
        config = model.config
        self.k_mer = config.k_mer
        self.limit = config.max_tokens - 2  # tokens a sequence may have besides <cls> and <eos>
        self.layers = self._normalised_layers(settings.layers, config.num_hidden_layers)
        self.window_size = self.limit if settings.window_size is None else settings.window_size
        self.window_stride = (
            max(1, self.window_size // 2) if settings.window_stride is None else settings.window_stride
        )
        if settings.long == "window":
            if not 1 <= self.window_size <= self.limit:
                raise ValueError(
                    f"window_size must be between 1 and {self.limit} tokens; got {self.window_size}."
                )
            plan_windows(self.window_size + 1, self.window_size, self.window_stride)  # checks the stride
        self.device = torch.device(device) if device is not None else model.device
        self.compute_dtype = DTYPES[settings.dtype]
        if self.compute_dtype == torch.float16 and self.device.type == "cpu":
            raise ValueError("float16 needs a GPU; on CPU use bfloat16 (fast where the CPU has AVX512-BF16).")
        self.model.to(self.device)
        self.rules = InputRules.of(
            tokenizer,
            self.limit,
            allow_long=settings.long != "error",
            long_remedy="use long='truncate' or long='window'",
        )
        tokenizer_k_mer = tokenizer.k_mer
        if tokenizer_k_mer != self.k_mer:
            raise ValueError(
                f"{type(tokenizer).__name__} reads {tokenizer_k_mer} nucleotide(s) per token but the model "
                f"{self.k_mer}: load the tokenizer saved with the model (RnaFmTokenizer for RNA-FM, "
                "RnaFmCodonTokenizer for mRNA-FM)."
            )

    def effective_settings(self) -> dict[str, object]:
        """The settings as applied: layer numbers counted from 0, window sizes only when windowing."""
        windows = self.settings.long == "window"
        return {
            "layers": list(self.layers),
            "pooling": self.settings.pooling,
            "long": self.settings.long,
            "window_size": self.window_size if windows else None,
            "window_stride": self.window_stride if windows else None,
            "merge": self.settings.merge if windows else None,
            "dtype": self.settings.dtype,
        }

    @staticmethod
    def _normalised_layers(layers: Sequence[int], count: int) -> tuple[int, ...]:
        """Layer numbers 0 (embeddings) .. count (last, after the final LayerNorm); negative ones count back."""
        normalised = []
        for layer in layers:
            if not -(count + 1) <= layer <= count:
                raise ValueError(
                    f"Layer {layer} does not exist: the model has layers 0 (embeddings) to {count} (or -1 for "
                    f"the last, down to {-(count + 1)})."
                )
            normalised.append(layer % (count + 1))
        if len(set(normalised)) != len(normalised):
            raise ValueError(f"Layers {list(layers)} name the same layer twice.")
        return tuple(normalised)

    # ---- input checks ----------------------------------------------------------------------------------------

    def tokens_of(self, sequence: str) -> int:
        return len(sequence) // self.k_mer

    # ---- planning --------------------------------------------------------------------------------------------

    def windows_of(self, record: SequenceRecord) -> list[tuple[int, int]]:
        """The token ranges the model sees for a record (one unless it is long and windowed)."""
        tokens = self.tokens_of(record.sequence)
        if tokens <= self.limit:
            return [(0, tokens)]
        if self.settings.long == "truncate":
            return [(0, self.limit)]
        if self.settings.long == "window":
            return plan_windows(tokens, self.window_size, self.window_stride)
        raise ValueError(f"{record.id}: {tokens} tokens, longer than the model reads (long='error').")

    def embedded_length(self, record: SequenceRecord) -> int:
        """Nucleotides of the record that get vectors: all of them, or the kept start with long='truncate'."""
        return self.windows_of(record)[-1][1] * self.k_mer

    def pieces_of(self, records: Sequence[SequenceRecord]) -> list[Piece]:
        """All pieces, shortest first, so that batches hold similar lengths."""
        pieces = [
            Piece(index, start, end, record.sequence[start * self.k_mer : end * self.k_mer])
            for index, record in enumerate(records)
            for start, end in self.windows_of(record)
        ]
        pieces.sort(key=lambda piece: (len(piece.text), piece.record, piece.start))
        return pieces

    def batches_of(self, pieces: Sequence[Piece], batch_tokens: int) -> Iterator[list[Piece]]:
        """
        Consecutive pieces (shortest first) while their tokens (with `<cls>`, `<eos>`) stay within `batch_tokens`;
        a piece longer than the budget is a batch of its own. Batches are packed, so no token is padding.
        """
        batch: list[Piece] = []
        tokens = 0
        for piece in pieces:
            width = len(piece.text) // self.k_mer + 2
            if batch and tokens + width > batch_tokens:
                yield batch
                batch, tokens = [], 0
            batch.append(piece)
            tokens += width
        if batch:
            yield batch

    # ---- compute ---------------------------------------------------------------------------------------------

    @torch.inference_mode()
    def forward(self, texts: Sequence[str]) -> tuple[torch.Tensor, list[int]]:
        """Hidden states of the chosen layers for the texts packed end to end, (layers, tokens, hidden) in float32,
        and where each text's `<cls>` row is (its `<eos>` ends it)."""
        ids = self.tokenizer(list(texts), return_attention_mask=False)["input_ids"]
        bounds = [0, *accumulate(map(len, ids))]
        input_ids = torch.tensor([list(chain.from_iterable(ids))], device=self.device)
        cu_seq_lens = torch.tensor(bounds, device=self.device)
        use_autocast = self.compute_dtype != torch.float32
        with torch.autocast(self.device.type, dtype=self.compute_dtype, enabled=use_autocast):
            last_only = self.layers == (self.model.config.num_hidden_layers,)
            # Only the layers asked for are kept (transformers records the others as None).
            output = self.model(
                input_ids=input_ids,
                cu_seq_lens_q=cu_seq_lens,
                output_hidden_states=False if last_only else list(self.layers),
            )
        states = [output.last_hidden_state] if last_only else [output.hidden_states[n] for n in self.layers]
        return torch.cat(states).float(), bounds[:-1]

    def plan(self, records: Sequence[SequenceRecord], batch_tokens: int) -> list[list[Piece]]:
        """The batches that embed `records`. They depend only on the records and the budget, so a resumed or
        data-parallel run computes every sequence in the very batch an uninterrupted one-process run does."""
        check_batch_tokens(batch_tokens)
        return list(self.batches_of(self.pieces_of(records), batch_tokens))

    @staticmethod
    def work_units(batches: Sequence[list[Piece]]) -> list[list[list[Piece]]]:
        """Runs of consecutive batches that no record straddles (a long record's windows may fill several)."""
        units: list[list[list[Piece]]] = []
        for batch in batches:
            if units and units[-1][-1][-1].record == batch[0].record:
                units[-1].append(batch)
            else:
                units.append([batch])
        return units

    def run(
        self,
        records: Sequence[SequenceRecord],
        batch_tokens: int = DEFAULT_BATCH_TOKENS,
        progress: bool = True,
        description: str = "Embedding",
        statistics: RunStatistics | None = None,
        batches: Sequence[list[Piece]] | None = None,
        skip: Collection[int] = (),
    ) -> Iterator[tuple[SequenceRecord, np.ndarray]]:
        """
        Yield `(record, array)` as each record is finished, in order of length: for all `records`, or for those
        whose pieces are all in `batches` (from `plan`), except the record numbers (indices) in `skip`.
        """
        from huggingface_hub.utils import tqdm

        statistics = statistics if statistics is not None else RunStatistics()
        batches = self.plan(records, batch_tokens) if batches is None else batches
        remaining: dict[int, int] = {}
        for batch in batches:
            for piece in batch:
                remaining[piece.record] = remaining.get(piece.record, 0) + 1
        wanted = {index for index in remaining if index not in skip}
        done: dict[int, list[tuple[Piece, np.ndarray, np.ndarray]]] = {}
        total_nt = sum(self.embedded_length(records[index]) for index in wanted)
        started = time.perf_counter()
        with tqdm(total=total_nt, desc=description, unit="nt", unit_scale=True, disable=not progress) as bar:
            for batch in batches:
                if not any(piece.record in wanted for piece in batch):
                    continue
                states, starts = self.forward([piece.text for piece in batch])
                if not is_finite(states):  # two reductions, no mask; the culprit is sought only now
                    raise self._non_finite_error(states, starts, batch, records)
                if self.device.type == "cpu":
                    release_freed_memory()
                statistics.tokens += states.shape[1]
                states = states.cpu().numpy()
                for start, piece in zip(starts, batch, strict=True):
                    if piece.record not in wanted:
                        continue
                    count = piece.end - piece.start
                    residues = states[:, start + 1 : start + 1 + count]
                    done.setdefault(piece.record, []).append((piece, residues, states[:, start]))
                    remaining[piece.record] -= 1
                    if remaining[piece.record]:
                        continue
                    record = records[piece.record]
                    array = self._finish(record, done.pop(piece.record))
                    statistics.sequences += 1
                    statistics.nucleotides += self.embedded_length(record)
                    bar.update(self.embedded_length(record))
                    elapsed = time.perf_counter() - started
                    bar.set_postfix_str(f"{statistics.sequences / elapsed:.1f} seq/s", refresh=False)
                    yield record, array
        statistics.seconds += time.perf_counter() - started

    def _non_finite_error(
        self,
        states: torch.Tensor,
        starts: Sequence[int],
        batch: Sequence[Piece],
        records: Sequence[SequenceRecord],
    ) -> NonFiniteOutputError:
        """The error for the first piece of the batch whose rows (in `states`, layers first) hold NaN or Inf,
        naming its record and the layers concerned."""
        ends = [*starts[1:], states.shape[1]]
        layers, record = list(self.layers), records[batch[0].record]
        for start, end, piece in zip(starts, ends, batch, strict=True):
            finite = torch.isfinite(states[:, start:end]).flatten(1).all(dim=1)
            if not bool(finite.all()):
                layers = [self.layers[k] for k in torch.nonzero(~finite).flatten().tolist()]
                record = records[piece.record]
                break
        named = f"layer {layers[0]}" if len(layers) == 1 else f"layers {', '.join(map(str, layers))}"
        cause = non_finite_cause(FLOAT16_REMEDY if self.settings.dtype == "float16" else None)
        return NonFiniteOutputError(
            f"record {record.number} ({record.id!r}), {named}", cause, record.sequence
        )

    def _finish(
        self, record: SequenceRecord, parts: list[tuple[Piece, np.ndarray, np.ndarray]]
    ) -> np.ndarray:
        """Stitch a record's pieces, pool, and drop the layer axis when one layer was asked for."""
        parts.sort(key=lambda part: part[0].start)
        windows = [(piece.start, piece.end) for piece, _, _ in parts]
        length = windows[-1][1]
        if len(parts) == 1:
            residues = parts[0][1]
        else:
            residues = stitch_windows(
                windows, [vectors for _, vectors, _ in parts], length, self.settings.merge
            )
        if self.settings.pooling == "mean":
            array = residues.mean(axis=-2, dtype=np.float64).astype(np.float32)
        elif self.settings.pooling == "cls":
            # With windows: the mean of the windows' <cls> vectors.
            array = np.mean([cls for _, _, cls in parts], axis=0, dtype=np.float64).astype(np.float32)
        else:
            array = residues
        array = np.ascontiguousarray(array, dtype=np.float32)
        return array[0] if len(self.layers) == 1 else array


def load_encoder(
    model,
    tokenizer=None,
    device: str | torch.device | None = None,
    compute_dtype: torch.dtype = torch.float32,
):
    """`(model, tokenizer)` from a folder or Hub id (the encoder of any RNA-FM folder), or a loaded model.

    A folder loaded for reduced-precision compute keeps its linear layers in `compute_dtype` (what autocast would
    cast them to on every call, so the numbers are the same) and the rest in float32, which halves the weights'
    memory instead of holding float32 weights plus autocast's reduced copies."""
    from transformers import AutoModel, AutoTokenizer

    device = checked_device(device)
    if isinstance(model, (str, os.PathLike)):
        name = model_location(check_model_name(model))
        # float32 weights whatever the folder stores: --dtype decides the compute precision. torch's GELU kernel,
        # within ~1e-6 of the original formula, is one pass over the feed-forward intermediate instead of five.
        # Loaded first and strictly: a damaged folder or an invalid config.json is refused with its own message.
        model = load_model(name, AutoModel, dtype=torch.float32, hidden_act="gelu")
        tokenizer = tokenizer or AutoTokenizer.from_pretrained(name)
        if compute_dtype != torch.float32:
            for module in model.modules():
                if isinstance(module, torch.nn.Linear):
                    module.to(compute_dtype)
    elif tokenizer is None:
        raise ValueError("With a loaded model, pass its tokenizer too (tokenizer=...).")
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return model.to(device), tokenizer


def embed(
    inputs: str | os.PathLike | Mapping[str, str] | Iterable[str | tuple[str, str]],
    model="rna-fm",
    *,
    tokenizer=None,
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
    progress: bool = True,
    log: Callable[[str], None] | None = print_to_stderr,
) -> Iterator[tuple[str, np.ndarray]]:
    """
    Embed sequences with RNA-FM or mRNA-FM: an iterator of `(id, array)` per sequence, shortest first. The inputs
    are checked and the model loaded when `embed` is called; the arrays are computed as the iterator is read.

    `inputs`: a FASTA path, `{id: sequence}`, or a list of sequences (ids "0", "1", ...) or `(id, sequence)`
    pairs. `model`: a converted folder, a Hub id or a loaded `RnaFmModel` (then pass `tokenizer`). The array is
    (L, hidden) float32 (`<cls>` and `<eos>` removed; L nucleotides, or codons for mRNA-FM); `pooling="mean"` gives
    the mean over the sequence's own residues and `"cls"` the `<cls>` vector, each (hidden,); several `layers`
    (0 = embeddings, -1 = last) add a leading layer axis, in the order given. Inputs are checked before any compute: duplicate ids,
    empty sequences, unknown characters and (with `long="error"`) over-long sequences raise
    `InvalidSequencesError` listing them, or are skipped and logged with `skip_invalid=True`. `long="truncate"`
    keeps the first 1022 tokens (logged by id); `long="window"` embeds overlapping windows of `window_size` tokens
    (default 1022) every `window_stride` (default half a window) and stitches them (`merge="mean"`: each position
    averaged over the windows that contain it; `"center"`: taken from the window where it sits farthest from a cut).
    Skipped, truncated and summary messages go to `log` (stderr by default; `None` silences them).
    Batches hold up to `batch_tokens` model tokens, packed end to end without padding; `dtype="bfloat16"` /
    `"float16"` runs the model under autocast (arrays stay float32). A folder or Hub id is loaded with torch's GELU
    kernel (`hidden_act="gelu"`, within 1e-6 of the original formula and faster); a loaded model runs as it is.
    A folder is loaded strictly (`rnafm_hf.model_loading.load_model`: weights that do not match its config.json, or
    hold NaN, raise `ModelFolderError`), and an output holding NaN or Inf raises `NonFiniteOutputError` naming the
    record and the layer instead of yielding it.

    Example (a tiny random model; use a converted folder in practice):

    ```python
    >>> import rnafm_hf
    >>> from rnafm_hf import RnaFmConfig, RnaFmModel, RnaFmTokenizer
    >>> model = RnaFmModel(RnaFmConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
    ...                                intermediate_size=64))
    >>> vectors = dict(rnafm_hf.embed({"a": "GGGUGCGAUC", "b": "ACGU"}, model, tokenizer=RnaFmTokenizer(),
    ...                               progress=False, log=None))
    >>> vectors["a"].shape, vectors["b"].shape
    ((10, 32), (4, 32))
    >>> pooled = dict(rnafm_hf.embed(["ACGU"], model, tokenizer=RnaFmTokenizer(), pooling="mean",
    ...                               layers=[0, -1], progress=False, log=None))
    >>> pooled["0"].shape
    (2, 32)

    ```
    """
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
    # Checked and loaded now, not when the first item is taken: bad input fails at the call.
    embedder, _, valid, _ = prepared(inputs, model, tokenizer, settings, device, skip_invalid, log)
    return _embedded(embedder, valid, batch_tokens, progress, log)


def _embedded(
    embedder: Embedder,
    valid: Sequence[SequenceRecord],
    batch_tokens: int,
    progress: bool,
    log: Callable[[str], None] | None,
) -> Iterator[tuple[str, np.ndarray]]:
    statistics = RunStatistics()
    for record, array in embedder.run(valid, batch_tokens, progress, statistics=statistics):
        yield record.id, array
    if log is not None:
        log(statistics.summary())


def prepared(
    inputs: str | os.PathLike | Mapping[str, str] | Iterable[str | tuple[str, str]],
    model,
    tokenizer,
    settings: EmbeddingSettings,
    device: str | None,
    skip_invalid: bool,
    log: Callable[[str], None] | None,
) -> tuple[Embedder, list[SequenceRecord], list[SequenceRecord], list[InvalidRecord]]:
    """What every run starts with: the loaded model, all input records, those to embed and those skipped."""
    records = read_inputs(inputs)
    loaded, tokenizer = load_encoder(model, tokenizer, device, DTYPES[settings.dtype])
    embedder = Embedder(loaded, tokenizer, settings, device)
    valid, skipped = checked_records(embedder, records, skip_invalid, log)
    return embedder, records, valid, skipped


def checked_records(
    embedder: Embedder,
    records: Sequence[SequenceRecord],
    skip_invalid: bool,
    log: Callable[[str], None] | None,
) -> tuple[list[SequenceRecord], list[InvalidRecord]]:
    """The records to embed and those skipped; invalid ones raise `InvalidSequencesError` unless `skip_invalid`."""
    valid, invalid = checked(
        embedder.rules,
        records,
        skip_invalid,
        log,
        "embedded",
        "skip them with skip_invalid=True",
    )
    if log is None:
        return valid, invalid
    if embedder.settings.long == "truncate":  # named, so that nothing is shortened silently
        for record in valid:
            if embedder.tokens_of(record.sequence) > embedder.limit:
                log(
                    f"Truncating {record.id}: {len(record.sequence)} nt, embedding the first "
                    f"{embedder.limit * embedder.k_mer} nt (long='truncate')."
                )
    return valid, invalid
