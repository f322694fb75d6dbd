"""
Convert an original RNA-FM / mRNA-FM / secondary-structure `.pth` file into a folder that the transformers Auto
classes load, with or without rnafm-hf installed (`trust_remote_code=True`).

The command-line doors are `rnafm-hf convert` and `conversion/convert_original_to_hf.py`; both call
`convert_checkpoint`.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
import uuid
import warnings
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .hub import resolve_checkpoint
from .model_card import render_model_card
from .modeling_rnafm import RnaFmForMaskedLM, RnaFmForSecondaryStructure
from .options import CONVERSION_DTYPES, DEFAULT_BASE_MODEL, DEFAULT_OUTPUT_NAMES
from .original_checkpoint import OriginalCheckpoint, build_model, read_original
from .output_folder import NoSpaceError, OutputFolder, _is_no_space, _no_space, hold_lock, sibling_lock
from .tokenization_rnafm import RnaFmCodonTokenizer, RnaFmTokenizer
from .verification import FM_INSTALL, ParityError, ParityReport, fm_is_available, verify_folder

DTYPES = {name: getattr(torch, name) for name in CONVERSION_DTYPES}
# The modules a folder needs for trust_remote_code; modeling imports configuration relatively.
REMOTE_CODE_FILES = (
    "configuration_rnafm.py",
    "modeling_rnafm.py",
    "packing_rnafm.py",
    "losses_rnafm.py",
    "tokenization_rnafm.py",
)
CONFIG_AUTO_MAP = {
    "AutoConfig": "configuration_rnafm.RnaFmConfig",
    "AutoModel": "modeling_rnafm.RnaFmModel",
    "AutoModelForMaskedLM": "modeling_rnafm.RnaFmForMaskedLM",
    "AutoModelForSequenceClassification": "modeling_rnafm.RnaFmForSequenceClassification",
    "AutoModelForTokenClassification": "modeling_rnafm.RnaFmForTokenClassification",
}


@dataclass
class ConversionResult:
    """What `convert_checkpoint` wrote: the folder, the kind it found, the parity numbers and any notes."""

    output_dir: Path
    kind: str
    report: ParityReport | None
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def size_bytes(self) -> int:
        return sum(f.stat().st_size for f in self.output_dir.rglob("*") if f.is_file())


def _log_nothing(message: str) -> None:
    pass


def write_hf_folder(original: OriginalCheckpoint, folder: Path, dtype: torch.dtype) -> None:
    """Model weights (safetensors, the tied embedding stored once), config with `auto_map`, tokenizer and the
    Python files that `trust_remote_code=True` imports.

    The config names `RnaFmForSecondaryStructure` for a secondary-structure file and `RnaFmForMaskedLM` otherwise.
    Weights that class has no place for (the contact regression; the LM head next to a structure head) are saved
    too, so that every head class loads what it needs from the one file.
    """
    model_class = RnaFmForSecondaryStructure if original.kind == "rna-fm-ss" else RnaFmForMaskedLM
    model = build_model(original, model_class).to(dtype)
    own = model.state_dict()
    extra = {k: v.to(dtype) for k, v in original.state_dict.items() if k not in own}
    model.save_pretrained(folder, state_dict=own | extra if extra else None)
    tokenizer = RnaFmCodonTokenizer() if original.kind == "mrna-fm" else RnaFmTokenizer()
    tokenizer.save_pretrained(folder)
    add_remote_code(folder)


def add_remote_code(folder: str | os.PathLike) -> None:
    """
    Make a saved RNA-FM folder load without rnafm-hf (`trust_remote_code=True`): copy in the Python files of the
    config, models and tokenizers, and point `auto_map` in `config.json` and `tokenizer_config.json` at them.

    `rnafm-hf convert` does this. `save_pretrained` and `Trainer.save_model` write weights and configs only, so call
    it on a fine-tuned folder before sharing it on the Hub.
    """
    folder = Path(folder)
    config_path, tokenizer_path = folder / "config.json", folder / "tokenizer_config.json"
    if not config_path.is_file():
        raise FileNotFoundError(f"{folder} has no config.json; save the model there first (save_pretrained).")
    config = json.loads(config_path.read_text())
    config["auto_map"] = {**config.get("auto_map", {}), **CONFIG_AUTO_MAP}
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    if tokenizer_path.is_file():
        tokenizer_config = json.loads(tokenizer_path.read_text())
        tokenizer_class = tokenizer_config.get("tokenizer_class", RnaFmTokenizer.__name__)
        known = (RnaFmTokenizer.__name__, RnaFmCodonTokenizer.__name__)
        if tokenizer_class not in known:
            raise ValueError(
                f"{tokenizer_path} names the tokenizer {tokenizer_class!r}, which is not one of rnafm-hf's "
                f"({', '.join(known)}); save the RNA-FM tokenizer there (tokenizer.save_pretrained)."
            )
        tokenizer_config["auto_map"] = {"AutoTokenizer": [None, f"tokenization_rnafm.{tokenizer_class}"]}
        tokenizer_path.write_text(json.dumps(tokenizer_config, indent=2, sort_keys=True) + "\n")
    else:
        warnings.warn(
            f"{folder} has no tokenizer: the model will load without rnafm-hf, but AutoTokenizer will not. Save "
            "it there too (tokenizer.save_pretrained, or Trainer(processing_class=tokenizer)).",
            stacklevel=2,
        )
    package = Path(__file__).parent
    for name in REMOTE_CODE_FILES:
        shutil.copyfile(package / name, folder / name)


def sha256_of(path: Path) -> str:
    """Hex SHA-256 of a file, for the model card's record of the source."""
    from huggingface_hub.utils.sha import sha_fileobj

    with open(path, "rb") as file:
        return sha_fileobj(file).hex()


def check_output_folder(output_dir: Path, overwrite: bool, checkpoint: Path | None = None) -> None:
    """
    Refuse an output that would clobber something the user keeps: a non-empty folder that `convert` did not write
    (`OutputFolder`: no marker, or another command's), one it wrote unless `--overwrite`, the working directory or
    one of its parents, or a folder holding the checkpoint itself.
    """
    target = output_dir.resolve()
    if output_dir.is_symlink():
        raise FileExistsError(f"{output_dir} is a symbolic link; name a real folder as --output.")
    if output_dir.exists() and not output_dir.is_dir():
        raise FileExistsError(f"{output_dir} exists and is not a folder; choose another --output.")
    if target == Path.cwd().resolve() or target in Path.cwd().resolve().parents:
        raise FileExistsError(f"--output {output_dir} is the working folder or above it; name a new folder.")
    if checkpoint is not None and target in checkpoint.resolve().parents:
        raise FileExistsError(f"--output {output_dir} holds the checkpoint {checkpoint}; name a new folder.")
    if OutputFolder(output_dir, "convert").check() and not overwrite:
        raise FileExistsError(
            f"{output_dir} already exists and is not empty; choose another --output or pass --overwrite to replace it."
        )


def _move_into_place(staging: Path, output_dir: Path) -> None:
    """Move the finished folder in: whole when `output_dir` is new; into an earlier converted folder file by file,
    deleting the files the earlier conversion wrote and the new one did not, and keeping every other file."""
    OutputFolder(output_dir, "convert").move_in(staging)


def _first_missing_ancestor(path: Path) -> Path | None:
    missing = None
    for folder in [path, *path.parents]:
        if folder.exists():
            break
        missing = folder
    return missing


def _group_by_source(sources: dict[str, str]) -> dict[str, list[str]]:
    grouped: dict[str, list[str]] = {}
    for name, source in sources.items():
        grouped.setdefault(source, []).append(name)
    return grouped


def convert_checkpoint(
    checkpoint: str | os.PathLike,
    output_dir: str | os.PathLike | None = None,
    *,
    kind: str | None = None,
    dtype: str = "float32",
    verify: bool | None = None,
    verify_sequences: Sequence[tuple[str, str]] | None = None,
    overwrite: bool = False,
    model_id: str | None = None,
    base_model: str = DEFAULT_BASE_MODEL,
    config_overrides: dict[str, Any] | None = None,
    backbone: str | os.PathLike | None = None,
    threshold: float | None = None,
    log: Callable[[str], None] = _log_nothing,
) -> ConversionResult:
    """
    Convert an original checkpoint (local path or `hf://OWNER/REPO/FILE`) into a Hub-ready folder.

    The kind (RNA-FM, mRNA-FM, secondary structure) is read from the contents; `kind` overrides it. The output
    defaults to `rna-fm`, `mrna-fm` or `rna-fm-ss` in the working directory. Everything is written to a hidden
    sibling folder first and moved into place only when complete (and verified), so a failure leaves no partial
    output. `verify=None` verifies when `fm` is importable, `True` requires it, `False` skips it; a float32
    folder that differs from `fm` by more than 1e-5 raises `ParityError`. `model_id` is the name used in the model
    card's code (default: the folder's name; give the Hub repo id when publishing).

    A secondary-structure file takes its backbone settings (`token_dropout`, head count) from `backbone` (the
    original `RNA-FM_pretrained.pth`, local or `hf://`, or a converted rna-fm folder), else from
    `RNA-FM_pretrained.pth` next to the file or in torch hub's cache, as `fm.downstream` does; with none found,
    fm's defaults are used and the log and the card say so. `threshold` overrides the pairing threshold, which is
    otherwise the original prediction config's for the head the file name names (PDB-All 0.33993712, bpRNA
    0.47729617, PDB-TR1 0.07595872; 0.5 for others). Every setting the file could not tell is listed in the card.

    Example:

    ```python
    >>> from rnafm_hf.conversion import convert_checkpoint
    >>> result = convert_checkpoint("RNA-FM_pretrained.pth")  # doctest: +SKIP
    >>> print(result.report.to_text())  # doctest: +SKIP

    ```
    """
    started = time.perf_counter()
    if dtype not in DTYPES:
        raise ValueError(f"Unknown dtype {dtype!r}; choose one of {', '.join(DTYPES)}.")
    if output_dir is not None:
        check_output_folder(Path(output_dir), overwrite)
    if verify and not fm_is_available():
        raise ImportError(f"Verification was requested but `fm` is not installed: {FM_INSTALL}")
    overrides = dict(config_overrides or {})
    if threshold is not None:
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"The threshold is a probability, between 0 and 1; got {threshold}.")
        overrides["ss_threshold"] = threshold
    path = resolve_checkpoint(checkpoint)
    log(f"Reading {path}")
    original = read_original(path, kind=kind, backbone=backbone, **overrides)
    if threshold is not None and original.kind != "rna-fm-ss":
        raise ValueError("A threshold is for secondary-structure files; this one is " + original.kind + ".")
    config = original.config
    log(
        f"Found {original.kind}: {config.num_hidden_layers} layers, width {config.hidden_size}, "
        f"{config.num_attention_heads} heads, vocabulary {config.vocab_size}"
        + (" (kind given)" if kind else " (detected from the contents)")
    )
    for note in original.notes:
        log(f"Note: {note}")
    if original.backbone is not None and original.backbone.found:
        log(f"Backbone: {original.backbone.location}")
    for source, names in _group_by_source(original.sources).items():
        values = ", ".join(f"{name}={getattr(config, name)}" for name in names)
        if source.startswith("ASSUMED"):
            log(f"WARNING: {values} assumed, not read: {source.removeprefix('ASSUMED: ')}.")
        else:
            log(f"{values} from {source}")
    output_dir = Path(output_dir or DEFAULT_OUTPUT_NAMES[original.kind])
    check_output_folder(output_dir, overwrite, path)
    created = _first_missing_ancestor(output_dir.parent)
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    held = ExitStack()  # the lock, for the whole conversion: two converts to one --output do not mix
    held.enter_context(hold_lock(sibling_lock(output_dir), output_dir))
    staging = output_dir.parent / f".{output_dir.resolve().name}.partial-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        check_output_folder(output_dir, overwrite, path)  # again, now that no other convert can write it
        staging.mkdir()
        write_hf_folder(original, staging, DTYPES[dtype])
        original.state_dict = {}  # the model built from it is gone; let the mapped file go too
        report, reason = None, None
        if verify is False:
            reason = "verification skipped with --no-verify"
        elif not fm_is_available():
            reason = f"the original `fm` package was not installed ({FM_INSTALL})"
        else:
            log("Verifying against fm")
            report = verify_folder(staging, path, original, verify_sequences, dtype=dtype, log=log)
            log(report.to_text())
            if not report.passed:
                difference = (
                    "gives NaN or infinite outputs where fm's or ours should be finite"
                    if math.isnan(report.worst) or math.isinf(report.worst)
                    else f"differs from fm by {report.worst:.2e} (> {report.tolerance:.0e})"
                )
                raise ParityError(f"The converted model {difference}; no folder was written.", report)
        if reason is not None:
            log(f"Not verified: {reason}.")
        source = str(checkpoint) if str(checkpoint).startswith("hf://") else Path(checkpoint).name
        card = render_model_card(
            original.kind,
            model_id or output_dir.resolve().name,
            report=report,
            source=f"`{source}` (sha256 `{sha256_of(path)}`)",
            not_verified_reason=reason,
            base_model=base_model,
            settings=original,
        )
        (staging / "README.md").write_text(card, encoding="utf-8")
        _move_into_place(staging, output_dir)
    except BaseException as error:
        if created is not None:
            shutil.rmtree(created, ignore_errors=True)
        if _is_no_space(error) and not isinstance(error, NoSpaceError):
            # save_pretrained's writers (safetensors' own error among them) do not say which file: name the folder.
            raise _no_space(output_dir) from error
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        held.close()
    return ConversionResult(output_dir, original.kind, report, original.notes, time.perf_counter() - started)
