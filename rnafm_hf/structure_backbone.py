"""
The RNA-FM backbone a secondary-structure file was trained on: where it is, what settings it gives, whether its
weights are the ones in the structure file.

A structure file (`RNA-FM-ResNet_PDB-All.pth`) is a bare state dict: it holds weights but not the training
arguments that decide `token_dropout` and the head count. The original never reads it alone:
`fm.downstream.build_rnafm_resnet` first builds RNA-FM from `RNA-FM_pretrained.pth` (from torch hub's checkpoint
cache) and then loads the structure file's weights into that model. This module does the same: the settings come
from the backbone file (or a converted RNA-FM folder), and the backbone weights of both files must agree.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

BACKBONE_FILE_NAME = "RNA-FM_pretrained.pth"
# fm reads `getattr(args, "token_dropout", False)`.
FM_DEFAULT_TOKEN_DROPOUT = False
# Each released structure head's threshold in the original prediction configs (ml4bio/RNA-FM
# redevelop/pretrained/ss_prediction.yml and experiments/ss_prediction_{bpRNA,PDB-TR1}.yml); the configs'
# default (redevelop/config/defaults.py, MODEL.THRESHOLD) for any other head.
HEAD_THRESHOLDS = {"PDB-All": 0.33993712, "bpRNA": 0.47729617, "PDB-TR1": 0.07595872}
HEAD_CONFIGS = {
    "PDB-All": "redevelop/pretrained/ss_prediction.yml",
    "bpRNA": "redevelop/pretrained/experiments/ss_prediction_bpRNA.yml",
    "PDB-TR1": "redevelop/pretrained/experiments/ss_prediction_PDB-TR1.yml",
}
DEFAULT_HEAD_THRESHOLD = 0.5


SETTINGS = ("token_dropout", "num_attention_heads")


@dataclass
class BackboneSettings:
    """The settings the structure file's backbone runs with, and where each comes from."""

    values: dict[str, Any]
    """`token_dropout` and `num_attention_heads` as the backbone gives them (only `token_dropout` when no backbone
    was found: the structure file's own contact regression then gives the head count)."""
    sources: dict[str, str]
    """Where each value comes from, in words, for the log and the model card; "ASSUMED: ..." when no file said."""
    location: str | None = None
    """The backbone file or folder as given, when one was read."""
    path: Path | None = None
    """The local original backbone file (downloaded for `hf://`), which verification hands to fm."""
    state_dict: Mapping[str, torch.Tensor] | None = None
    """Its weights in our names (`rnafm.*`, `lm_head.*`), to check against the structure file's."""

    @property
    def found(self) -> bool:
        return self.location is not None


def backbone_candidates(structure_path: str | os.PathLike | None) -> list[Path]:
    """Where fm's users keep the backbone: next to the structure file, and torch hub's checkpoint cache (where
    `fm.downstream.build_rnafm_resnet` downloads and reads it)."""
    candidates = [Path(structure_path).parent / BACKBONE_FILE_NAME] if structure_path is not None else []
    candidates.append(Path(torch.hub.get_dir()) / "checkpoints" / BACKBONE_FILE_NAME)
    return candidates


def find_backbone(structure_path: str | os.PathLike | None) -> Path | None:
    """The first of `backbone_candidates` that exists, or None."""
    return next((path for path in backbone_candidates(structure_path) if path.is_file()), None)


def read_backbone(location: str | os.PathLike, how: str = "given") -> BackboneSettings:
    """
    Settings and weights of a backbone: an original RNA-FM `.pth` with training arguments (local or
    `hf://OWNER/REPO/FILE`), or a converted RNA-FM folder (its `config.json`, which records where the converter
    took each setting, and its weights).
    """
    from .conversion import sha256_of
    from .hub import resolve_checkpoint
    from .original_checkpoint import CheckpointError, read_original

    if not str(location).startswith("hf://") and Path(location).is_dir():
        return _read_backbone_folder(Path(location), how)
    path = resolve_checkpoint(location)
    original = read_original(path, kind="rna-fm")
    if original.args is None:
        raise CheckpointError(
            f"The backbone {location} is a bare state dict without training arguments, so it cannot tell the "
            f"settings either; pass the original {BACKBONE_FILE_NAME} (it stores them) or a converted rna-fm folder."
        )
    where = f"the backbone file {path.name} ({how}, sha256 {sha256_of(path)[:16]}...)"
    sources = {
        name: f"the training arguments of {where}"
        if original.sources[name].startswith("the file's")
        else f"fm's default: the training arguments of {where} lack it"
        for name in SETTINGS
    }
    values = {name: getattr(original.config, name) for name in SETTINGS}
    return BackboneSettings(values, sources, str(location), path=path, state_dict=original.state_dict)


def _read_backbone_folder(folder: Path, how: str) -> BackboneSettings:
    from .model_loading import load_model
    from .modeling_rnafm import RnaFmForMaskedLM
    from .original_checkpoint import CheckpointError

    if not (folder / "config.json").is_file():
        raise CheckpointError(
            f"The backbone {folder} is a folder without config.json; give the original {BACKBONE_FILE_NAME} or "
            "a folder written by `rnafm-hf convert`."
        )
    model = load_model(folder, RnaFmForMaskedLM, dtype="auto")  # as stored: compared in its own precision
    if model.config.k_mer != 1:
        raise CheckpointError(f"The backbone {folder} is mRNA-FM; structure heads sit on RNA-FM.")
    recorded = model.config.conversion_sources or {}
    sources = {}
    for name in SETTINGS:
        earlier = recorded.get(name)
        if earlier is None:
            sources[name] = (
                f"the config.json of the converted backbone folder {folder.name} ({how}; it records no source)"
            )
        elif earlier.startswith("ASSUMED"):
            sources[name] = (
                f"ASSUMED: the backbone folder {folder.name} ({how}) was itself converted with this setting "
                f"assumed ({earlier.removeprefix('ASSUMED: ')})"
            )
        else:
            sources[name] = f"{earlier}, as recorded by the backbone folder {folder.name} ({how})"
    values = {name: getattr(model.config, name) for name in SETTINGS}
    return BackboneSettings(values, sources, str(folder), state_dict=model.state_dict())


def backbone_settings(
    structure_path: str | os.PathLike | None, backbone: str | os.PathLike | None
) -> BackboneSettings:
    """
    The backbone settings for a structure file: from `backbone` when given, else from `RNA-FM_pretrained.pth`
    found next to the file or in torch hub's cache, else fm's own default (`token_dropout` off, as
    `getattr(args, "token_dropout", False)`), marked as assumed; the head count then comes from the structure
    file's contact regression.
    """
    if backbone is not None:
        return read_backbone(backbone)
    found = find_backbone(structure_path)
    if found is not None:
        where = (
            "found next to the file"
            if found.parent == Path(structure_path or "").parent
            else "found in torch hub's cache"
        )
        return read_backbone(found, how=where)
    searched = ", ".join(str(path) for path in backbone_candidates(structure_path))
    source = (
        f"ASSUMED: no backbone was given and no {BACKBONE_FILE_NAME} was found ({searched}); fm's default was used "
        "(fm reads getattr(args, 'token_dropout', False)). If the backbone's arguments say otherwise, every "
        f"structure differs: convert again with --backbone {BACKBONE_FILE_NAME}"
    )
    return BackboneSettings({"token_dropout": FM_DEFAULT_TOKEN_DROPOUT}, {"token_dropout": source})


def check_backbone_weights(structure_state: Mapping[str, torch.Tensor], settings: BackboneSettings) -> None:
    """Refuse a backbone whose weights differ from the ones stored in the structure file (our names on both sides;
    the untrained contact regression is left out, fm initialises it afresh when a file lacks it)."""
    from .original_checkpoint import CheckpointError

    if settings.state_dict is None:
        return
    backbone = settings.state_dict
    shared = sorted(
        key
        for key in structure_state
        if key.startswith(("rnafm.", "lm_head.")) and key in backbone and "contact_head" not in key
    )
    missing = sorted(k for k in structure_state if k.startswith("rnafm.") and k not in backbone)
    differing = [key for key in shared if not _same_weights(structure_state[key], backbone[key])]
    if missing or differing:
        shown = (missing + differing)[:5]
        raise CheckpointError(
            f"The backbone {settings.location} is not the one this structure head was trained on: "
            f"{len(differing)} of {len(shared)} backbone tensors differ and {len(missing)} are missing there "
            f"(e.g. {', '.join(shown)}). Pass the RNA-FM file the head was trained with (--backbone, or "
            f"backbone= in Python); the released heads sit on the released {BACKBONE_FILE_NAME}."
        )


def _same_weights(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal, compared in the lower of the two precisions (a backbone folder may be stored in half precision)."""
    if a.shape != b.shape:
        return False
    if a.dtype != b.dtype:
        lower = a.dtype if torch.finfo(a.dtype).bits < torch.finfo(b.dtype).bits else b.dtype
        a, b = a.to(lower), b.to(lower)
    return torch.equal(a, b)


def head_threshold(structure_path: str | os.PathLike | None) -> tuple[float, str]:
    """The pairing threshold of the original prediction config for this head, read from the file name
    (`RNA-FM-ResNet_PDB-All.pth` -> 0.33993712), and where it comes from."""
    name = Path(structure_path).name if structure_path is not None else ""
    matches = [
        head
        for head in HEAD_THRESHOLDS
        if re.search(rf"(?<![A-Za-z0-9]){re.escape(head)}(?![A-Za-z0-9])", name, flags=re.IGNORECASE)
    ]
    if len(matches) == 1:
        head = matches[0]
        return HEAD_THRESHOLDS[head], (
            f"the original prediction config of the {head} head (ml4bio/RNA-FM {HEAD_CONFIGS[head]}, "
            f"MODEL.THRESHOLD), recognised from the file name {name}"
        )
    return DEFAULT_HEAD_THRESHOLD, (
        f"ASSUMED: the original prediction configs' default ({DEFAULT_HEAD_THRESHOLD}); the file name "
        f"{name or '(none)'} names none of the released heads ({', '.join(HEAD_THRESHOLDS)}). Pass --threshold "
        "(threshold= in Python) if the head has its own"
    )
