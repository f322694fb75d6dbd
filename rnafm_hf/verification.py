"""Check a converted folder against the original `fm` code on the same weights and real sequences."""

from __future__ import annotations

import datetime
import math
import os
import platform
import tempfile
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any
from unittest import mock

import torch

from .original_checkpoint import (
    BACKBONE_PREFIX,
    HEAD_PREFIX,
    OriginalCheckpoint,
    _split_checkpoint,
    fairseq_args,
    load_original_file,
)
from .structure_backbone import BACKBONE_FILE_NAME

TOLERANCE = 1e-5
FM_INSTALL = "pip install rna-fm==0.2.2"
BATCH_SIZE = 8
# The original README's example input (PDB chains), the same records as ../shared/data/example.fasta.
EXAMPLE_SEQUENCES = [
    (
        "3ktw_C",
        "AGAUAGUCGUGGGUUCCCUUUCUGGAGGGAGAGGGAAUUCCACGUUGACCGGGGGAACCGGCCAGGCCCGGAAGGGAGCAACCGUGCCCGGCUAUC",
    ),
    ("2der_D", "CCCCUUCGUCUAGAGGCCCAGGACACCGCCCUUUCACGGCGGUAACAGGGGUUCGAAUCCCCUAGGGGACGG"),
    ("1p6v_B", "GAUUCGACGGGGACUUCGGUCCUCGGACGCGGGUUCGAUUCCCGC"),
]


class ParityError(RuntimeError):
    """The converted folder does not reproduce the original model within the tolerance."""

    def __init__(self, message: str, report: ParityReport | None = None):
        super().__init__(message)
        self.report = report


def fm_is_available() -> bool:
    """Whether the original implementation (`pip install rna-fm==0.2.2`, import `fm`) can be imported."""
    try:
        import fm  # noqa: F401
    except ImportError:
        return False
    return True


def software_versions() -> dict[str, str]:
    """Versions of Python and the packages a parity measurement depends on."""
    versions = {"python": platform.python_version()}
    for distribution in ("rnafm-hf", "transformers", "torch", "rna-fm"):
        try:
            versions[distribution] = metadata.version(distribution)
        except metadata.PackageNotFoundError:
            versions[distribution] = "not installed"
    return versions


@dataclass
class ParityReport:
    """Max abs differences between the converted folder and `fm`, per hidden layer and for the MLM logits."""

    eager: dict[str, float]
    """Our eager attention path (the exact math); the tolerance applies to it."""
    sdpa: dict[str, float]
    """Our default SDPA path, whose kernels sum in another order; reported, not enforced."""
    sequences: list[tuple[str, int]]
    dtype: str
    inferred_settings: bool = False
    """True when neither the file nor a backbone file stores the training arguments, so fm was built with the head
    count and token-dropout setting the converter assumed: the check then covers the weights and their mapping,
    not those two settings."""
    tolerance: float = TOLERANCE
    versions: dict[str, str] = field(default_factory=software_versions)
    date: str = field(default_factory=lambda: datetime.date.today().isoformat())

    @property
    def worst(self) -> float:
        """The largest difference on the eager path; NaN if any output was not finite on either side."""
        return nanmax(self.eager.values())

    @property
    def enforced(self) -> bool:
        """The tolerance holds for float32 folders; reduced-precision weights are reported only."""
        return self.dtype == "float32"

    @property
    def passed(self) -> bool:
        # A non-finite difference fails whatever the precision.
        return math.isfinite(self.worst) and (not self.enforced or self.worst <= self.tolerance)

    def rows(self) -> list[tuple[str, float, float]]:
        return [(name, self.eager[name], self.sdpa[name]) for name in self.eager]

    def to_text(self) -> str:
        width = max(len(name) for name in ["output", *self.eager])
        lines = [f"{'output':<{width}} {'eager':>10} {'sdpa':>10}"]
        lines += [f"{name:<{width}} {eager:>10.2e} {sdpa:>10.2e}" for name, eager, sdpa in self.rows()]
        if not math.isfinite(self.worst):
            lines.append("FAIL: some outputs are NaN or infinite (on our side, fm's or both)")
        elif self.enforced:
            verdict = "PASS" if self.passed else "FAIL"
            lines.append(
                f"{verdict}: max abs diff {self.worst:.2e} (tolerance {self.tolerance:.0e}, eager path)"
            )
        else:
            lines.append(
                f"max abs diff {self.worst:.2e} ({self.dtype} weights; the tolerance applies to float32)"
            )
        return "\n".join(lines)

    def to_markdown(self) -> str:
        names = ", ".join(f"`{name}` ({length} nt)" for name, length in self.sequences)
        table = ["| output | max abs diff, eager | max abs diff, SDPA |", "|---|---|---|"]
        table += [f"| {name} | {eager:.2e} | {sdpa:.2e} |" for name, eager, sdpa in self.rows()]
        versions = ", ".join(f"{name} {version}" for name, version in self.versions.items())
        inferred = (
            " Neither the file nor a backbone file stores the training arguments, so `fm` was built with the head "
            "count and token-dropout setting the converter assumed (see the conversion settings); this checks the "
            "weights and their mapping, not those two settings."
            if self.inferred_settings
            else ""
        )
        if not math.isfinite(self.worst):
            verdict = "FAILED: some outputs are NaN or infinite."
        elif self.enforced:
            verdict = f"All within {self.tolerance:.0e} on the eager path." if self.passed else "FAILED."
        else:
            verdict = f"{self.dtype} weights: the differences are the rounding of the weights; not enforced."
        return "\n".join(
            [
                f"Measured by the converter on {self.date}: this folder, loaded back through the Auto classes and run "
                f"in float32 on the CPU, against the original `fm` code on the same weights, for {names}. "
                "Differences are over the real tokens (`<cls>`, residues, `<eos>`) of each hidden layer "
                "(0 = embeddings, the last one after the final LayerNorm) and of the MLM logits, for the sequences "
                "as given and with every 7th residue replaced by `<mask>`"
                + (
                    ", and over all residue pairs of the secondary-structure head's pairing probabilities. "
                    if "pair probabilities" in self.eager
                    else ". "
                )
                + verdict
                + inferred,
                "",
                *table,
                "",
                f"Software: {versions}.",
            ]
        )


def original_fm_model(path: str | os.PathLike, original: OriginalCheckpoint) -> tuple[torch.nn.Module, Any]:
    """The original `fm` model (and alphabet) of a language-model file, built by `fm`'s own loader."""
    import fm

    checkpoint = load_original_file(path)
    if original.args is None:
        # fm's loader needs training arguments; a bare file takes the ones the converter assumed.
        _, state = _split_checkpoint(checkpoint)
        state = {
            k.removeprefix(BACKBONE_PREFIX): v for k, v in state.items() if not k.startswith(HEAD_PREFIX)
        }
        checkpoint = {"args": fairseq_args(original.config), "model": state}
    theme = "rna-3mer" if original.kind == "mrna-fm" else "rna"
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Regression weights not found")
        model, alphabet = fm.pretrained.load_model_and_alphabet_core("rna-fm", dict(checkpoint), None, theme)
    return model.eval(), alphabet


def _backbone_file_for_fm(state: Mapping[str, torch.Tensor], original: OriginalCheckpoint) -> dict[str, Any]:
    """What fm should find as `RNA-FM_pretrained.pth`: the backbone file's own arguments and weights (training
    state left out); or, for a converted backbone folder or none at all, the settings the converter used around
    the structure file's backbone weights (`state`, the structure file's tensors)."""
    backbone = original.backbone
    if backbone is not None and backbone.path is not None:
        checkpoint = load_original_file(backbone.path)
        return {"args": checkpoint["args"], "model": checkpoint["model"]}
    state = {k.removeprefix(BACKBONE_PREFIX): v for k, v in state.items() if k.startswith(BACKBONE_PREFIX)}
    return {"args": fairseq_args(original.config), "model": state}


def original_fm_structure_model(path: str | os.PathLike, original: OriginalCheckpoint) -> torch.nn.Module:
    """
    fm's own secondary-structure model for the file, built as `fm.downstream.build_rnafm_resnet` builds it: a
    `Baseline` whose RNA-FM backbone fm loads from torch hub's cache (here a temporary one holding the backbone
    file), then the structure file's weights loaded into it, strictly. So the backbone settings come from the
    backbone file through fm's code, not from the converter.
    """
    from fm.downstream import Baseline

    # Loaded afresh, not shared with the converter's tensors: fm must not see what our side might have changed.
    _, state = _split_checkpoint(load_original_file(path))
    with tempfile.TemporaryDirectory() as hub:
        backbone_file = Path(hub) / "checkpoints" / BACKBONE_FILE_NAME
        backbone_file.parent.mkdir()
        torch.save(_backbone_file_for_fm(state, original), backbone_file)
        with mock.patch.object(torch.hub, "_hub_dir", hub), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Regression weights not found")
            warnings.filterwarnings("ignore", category=FutureWarning)
            model = Baseline(
                backbone_name="rna-fm", pairwise_predictor_name=original.head_name, backbone_frozen=1
            )
    model.load_state_dict(state)
    return model.eval()


def _verification_inputs(
    sequences: Sequence[tuple[str, str]], k_mer: int, max_residues: int, log: Callable[[str], None]
) -> list[tuple[str, str]]:
    if not sequences:
        raise ValueError("No sequences to verify on: the verification FASTA file holds no records.")
    prepared = []
    for name, sequence in sequences:
        sequence = "".join(sequence.split()).upper().replace("T", "U")
        if len(sequence) % k_mer:
            log(
                f"Verifying {name!r} on its first {len(sequence) // k_mer} whole codons ({len(sequence)} nt given)."
            )
            sequence = sequence[: len(sequence) // k_mer * k_mer]
        if not sequence:
            raise ValueError(f"Verification sequence {name!r} is empty (or shorter than one codon).")
        if len(sequence) // k_mer > max_residues:
            raise ValueError(
                f"Verification sequence {name!r} has {len(sequence) // k_mer} residues; the model takes at most "
                f"{max_residues}. Choose shorter sequences for --verify-fasta."
            )
        prepared.append((name, sequence))
    return prepared


def nanmax(values: Iterable[float]) -> float:
    """The largest value, or NaN if any is NaN (Python's `max` drops a NaN depending on where it stands)."""
    values = list(values)
    return math.nan if any(math.isnan(v) for v in values) else max(values)


def _max_diffs(ours: Any, expected: Mapping[str, Any], mask: torch.Tensor) -> dict[str, float]:
    def diff(a: torch.Tensor, b: torch.Tensor) -> float:
        return (a - b).abs()[mask].max().item()

    diffs = {f"layer {i}": diff(h, expected["representations"][i]) for i, h in enumerate(ours.hidden_states)}
    diffs["logits"] = diff(ours.logits, expected["logits"])
    return diffs


def verify_folder(
    folder: str | os.PathLike,
    checkpoint_path: str | os.PathLike,
    original: OriginalCheckpoint,
    sequences: Sequence[tuple[str, str]] | None = None,
    dtype: str = "float32",
    log: Callable[[str], None] = print,
) -> ParityReport:
    """
    Run `fm` on the original file and the converted folder (loaded back from disk through the Auto classes) on
    the same sequences; return the max abs differences per hidden layer and for the logits, and for a
    secondary-structure folder also of the pairing probabilities (fm's head on each sequence alone, ours on the
    padded batch).

    The folder is run in float32 whatever `dtype` its weights are stored in (for the report). mRNA-FM sees each
    sequence cut to whole codons. Raises `ParityError` if the two tokenisations differ.
    """
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    folder = Path(folder)
    config = original.config
    sequences = EXAMPLE_SEQUENCES if sequences is None else sequences
    inputs = _verification_inputs(sequences, config.k_mer, config.max_tokens - 2, log)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForMaskedLM.from_pretrained(
        folder, dtype=torch.float32, attn_implementation="eager"
    ).eval()
    structure = None
    try:
        if original.kind == "rna-fm-ss":
            original_model = original_fm_structure_model(checkpoint_path, original)
            reference, alphabet = original_model.backbone, original_model.backbone_alphabet
        else:
            reference, alphabet = original_fm_model(checkpoint_path, original)
    except Exception as error:  # fm's own loader refusing the file is a finding, not a crash
        raise ParityError(
            f"The original fm code could not build a model from {checkpoint_path}: {type(error).__name__}: "
            f"{str(error).strip().splitlines()[0] if str(error).strip() else ''}. The file is not one fm loads; no "
            "folder was written."
        ) from error
    if original.kind == "rna-fm-ss":
        from .auto import AutoModelForContactPrediction

        structure = (
            original_model.downstream_modules[original.head_name],
            AutoModelForContactPrediction.from_pretrained(folder, dtype=torch.float32).eval(),
        )
    converter = alphabet.get_batch_converter()
    eager: dict[str, float] = {}
    sdpa: dict[str, float] = {}
    # Single-threaded: with torch 2.13 on a 2-thread CPU, the first pass of a batch shape came out ~2e-4 off in
    # about one process in eight, in fm and in our model alike; one thread never did.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for start in range(0, len(inputs), BATCH_SIZE):
            chunk = inputs[start : start + BATCH_SIZE]
            batch = tokenizer([s for _, s in chunk], padding=True, return_tensors="pt")
            _compare_batch(chunk, batch, model, reference, converter, eager, sdpa)
            if structure is not None:
                _compare_structure(chunk, batch, *structure, reference, converter, eager, sdpa)
    finally:
        torch.set_num_threads(threads)
    return ParityReport(
        eager=eager,
        sdpa=sdpa,
        sequences=[(name, len(sequence)) for name, sequence in inputs],
        dtype=dtype,
        inferred_settings=original.args is None
        and (original.backbone is None or not original.backbone.found),
    )


def _compare_batch(
    chunk: Sequence[tuple[str, str]],
    batch: Mapping[str, torch.Tensor],
    model: Any,
    reference: torch.nn.Module,
    converter: Any,
    eager: dict[str, float],
    sdpa: dict[str, float],
) -> None:
    """Max abs differences of one batch, as given and with every 7th residue masked (the `<mask>` embedding and
    token dropout's rescaling only act on masked input), folded into `eager` and `sdpa` (running maxima)."""
    _, _, original_ids = converter(chunk)
    if not torch.equal(batch["input_ids"], original_ids):
        raise ParityError(f"Our tokenizer and fm's disagree on the token ids of {[n for n, _ in chunk]}.")
    mask = batch["attention_mask"].bool()
    residues = mask & (original_ids != reference.cls_idx) & (original_ids != reference.eos_idx)
    masked_ids = original_ids.masked_fill(
        residues & (torch.arange(original_ids.shape[1]) % 7 == 3), model.config.mask_token_id
    )
    for ids in (original_ids, masked_ids):
        with torch.inference_mode():
            # need_head_weights=True keeps fm on its own attention math rather than torch's fused MHA.
            expected = reference(
                ids, repr_layers=list(range(reference.num_layers + 1)), need_head_weights=True
            )
            found = {}
            for implementation in ("eager", "sdpa"):
                model.set_attn_implementation(implementation)
                outputs = model(
                    input_ids=ids, attention_mask=batch["attention_mask"], output_hidden_states=True
                )
                found[implementation] = _max_diffs(outputs, expected, mask)
        for implementation, total in (("eager", eager), ("sdpa", sdpa)):
            for name, value in found[implementation].items():
                total[name] = nanmax([total.get(name, 0.0), value])


def _compare_structure(
    chunk: Sequence[tuple[str, str]],
    batch: Mapping[str, torch.Tensor],
    original_head: torch.nn.Module,
    model: Any,
    reference: torch.nn.Module,
    converter: Any,
    eager: dict[str, float],
    sdpa: dict[str, float],
) -> None:
    """Max abs difference of the pairing probabilities: fm's head on each sequence alone (its batched output depends
    on the padding), ours on the padded batch."""
    with torch.inference_mode():
        expected = []
        for record in chunk:
            _, _, ids = converter([record])
            embedding = reference(ids, repr_layers=[reference.num_layers], need_head_weights=True)
            logits = original_head(ids, {"embedding": embedding["representations"][reference.num_layers]})
            expected.append(torch.sigmoid(logits.float())[0])
        for implementation, total in (("eager", eager), ("sdpa", sdpa)):
            model.set_attn_implementation(implementation)
            found = torch.sigmoid(model(**batch).logits)
            worst = nanmax(
                (found[i, : len(p), : len(p)] - p).abs().max().item() for i, p in enumerate(expected)
            )
            total["pair probabilities"] = nanmax([total.get("pair probabilities", 0.0), worst])
