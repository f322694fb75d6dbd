"""Read the original RNA-FM / mRNA-FM / secondary-structure `.pth` files into an `RnaFmConfig` and a state dict.

This reproduces `fm.pretrained.load_model_and_alphabet_local`: fairseq argument and key prefixes stripped, sizes
and `token_dropout` read from the file's arguments, `emb_layer_norm_before` switched on by the presence of its
weights, and the `<mask>` row of the token embeddings zeroed where fm's zeroing survives (see `read_original`).
Secondary-structure files (a state dict of `fm.downstream.Baseline`) hold the same model under `backbone.` and the
ResNet head under `downstream_modules.`; they are read on top of the backbone they were trained on
(`structure_backbone`), as `fm.downstream` reads them.

Files are opened with `weights_only=True`, allowing only plain data (tensors, `argparse.Namespace`, and numpy
numbers, dtypes and numeric arrays; see `safe_loading`), so a file cannot run code while it loads. What kind of
model a file holds is read from its contents, never from its name (only a structure head's pairing threshold is
taken from the name, as the original prediction configs name the files).
"""

from __future__ import annotations

import argparse
import os
import pickle
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from .configuration_rnafm import MRNA_FM_PRESET, RNA_FM_PRESET, RnaFmConfig
from .model_loading import is_finite
from .modeling_rnafm import RnaFmModel, RnaFmPreTrainedModel
from .options import KINDS
from .safe_loading import UnsafeCheckpointError, load_checkpoint_safely
from .structure_backbone import BackboneSettings, backbone_settings, check_backbone_weights, head_threshold

PADDING_IDX = 1
# What fm's BioBertModel reads from the training arguments (fairseq's `encoder_` prefix removed).
FM_REQUIRED_ARGS = ("arch", "layers", "embed_dim", "ffn_embed_dim", "attention_heads", "max_positions")
FAIRSEQ_NAMES = {
    name: f"encoder_{name}" for name in ("layers", "embed_dim", "ffn_embed_dim", "attention_heads")
}
BACKBONE_PREFIX = "backbone."
HEAD_PREFIX = "downstream_modules."
# Original (prefix-stripped) key -> our key in the RnaFmForMaskedLM / RnaFmForContactPrediction namespace.
_KEY_RULES = [
    (r"embed_tokens\.weight", "rnafm.embeddings.word_embeddings.weight"),
    (r"embed_positions\.weight", "rnafm.embeddings.position_embeddings.weight"),
    (r"emb_layer_norm_before\.(weight|bias)", r"rnafm.embeddings.layer_norm.\1"),
    (
        r"layers\.(\d+)\.((self_attn\.[qkv]_proj|self_attn\.out_proj|self_attn_layer_norm|fc1|fc2|final_layer_norm)"
        r"\.(weight|bias))",
        r"rnafm.encoder.layers.\1.\2",
    ),
    (r"emb_layer_norm_after\.(weight|bias)", r"rnafm.encoder.emb_layer_norm_after.\1"),
    (r"lm_head\.((dense|layer_norm)\.(weight|bias)|bias)", r"lm_head.\1"),
    (r"lm_head\.weight", "lm_head.decoder.weight"),
    (r"contact_head\.regression\.(weight|bias)", r"contact_head.regression.\1"),
]
_LAYER_PARTS = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.out_proj")
_LAYER_PARTS += ("self_attn_layer_norm", "fc1", "fc2", "final_layer_norm")
CONTACT_REGRESSION_KEYS = ("contact_head.regression.weight", "contact_head.regression.bias")
# The secondary-structure head: the original `PairwiseConcatWithResNet` keys -> ours in `RnaFmForSecondaryStructure`.
SS_HEAD_TYPE = "pc-resnet"
DEFAULT_SS_HEAD_NAME = "pc-resnet_1_sym_first:r-ss"
_BN = r"bn1\.(?:weight|bias|running_mean|running_var|num_batches_tracked)"
_SS_HEAD_KEY_RULES = [
    (r"pre_reduction\.(weight|bias)", r"ss_head.reduction.\1"),
    (r"proj\.first\.0\.(weight|bias)", r"ss_head.pair_projection.\1"),
    (rf"proj\.resnet\.(\d+)\.({_BN}|conv1\.weight|conv2\.weight)", r"ss_head.blocks.\1.\2"),
    (r"proj\.final\.(weight|bias)", r"ss_head.output.\1"),
]
VOCABULARIES = {RNA_FM_PRESET["vocab_size"]: RNA_FM_PRESET, MRNA_FM_PRESET["vocab_size"]: MRNA_FM_PRESET}
_KIND_OF_VOCABULARY = {RNA_FM_PRESET["vocab_size"]: "rna-fm", MRNA_FM_PRESET["vocab_size"]: "mrna-fm"}


class CheckpointError(ValueError):
    """The file is not a readable original RNA-FM checkpoint (unsafe, damaged, or another model's)."""


@dataclass
class OriginalCheckpoint:
    """What an original file holds, in our terms."""

    kind: str
    """`"rna-fm"`, `"mrna-fm"` or `"rna-fm-ss"` (a secondary-structure file: RNA-FM backbone + ResNet head)."""
    config: RnaFmConfig
    state_dict: dict[str, torch.Tensor]
    """Backbone and LM head in `RnaFmForMaskedLM` names, plus `contact_head.regression.*` when the file has them and
    `ss_head.*` (`RnaFmForSecondaryStructure` names) for a secondary-structure file."""
    head_name: str | None = None
    """The original module name of the secondary-structure head (`pc-resnet_1_sym_first:r-ss`), when read."""
    args: dict[str, Any] | None = None
    """The training arguments with fairseq's `encoder_` prefix removed; None for a bare state dict."""
    notes: list[str] = field(default_factory=list)
    """What was read differently from what the file holds, for the user to know."""
    sources: dict[str, str] = field(default_factory=dict)
    """Where the settings a file may not store (`token_dropout`, `num_attention_heads`, `ss_threshold`) came from,
    in words; a value the file could not tell us starts with "ASSUMED"."""
    backbone: BackboneSettings | None = None
    """For a secondary-structure file: the backbone its settings were read from (see `structure_backbone`)."""

    @property
    def assumptions(self) -> list[str]:
        """The settings that were assumed rather than read, each with the reason."""
        return [f"{name}: {source}" for name, source in self.sources.items() if source.startswith("ASSUMED")]


def load_original_file(path: str | os.PathLike) -> Any:
    """
    `torch.load` an original file safely: plain data only (tensors, `argparse.Namespace`, numpy numbers), nothing
    executed; see `rnafm_hf.safe_loading.load_checkpoint_safely`.

    The tensors are memory-mapped where the file format allows it, so reading costs little RAM, and the training
    state of a fairseq file (optimizer state, `extra_state`) is dropped unread. A file that asks to run code, or that
    cannot be read (truncated, not a PyTorch file), raises `CheckpointError`.
    """
    if not os.path.isfile(path):
        raise CheckpointError(f"{path}: no such file.")
    try:
        return load_checkpoint_safely(path)
    except UnsafeCheckpointError as error:
        raise CheckpointError(str(error)) from error
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError, LookupError) as error:
        # LookupError: KeyError or IndexError from the unpickler on a file that is not quite a pickle.
        raise _unreadable(path, error) from error


def _unreadable(path: str | os.PathLike, error: Exception) -> CheckpointError:
    size = os.path.getsize(path)
    return CheckpointError(
        f"Could not read {path} ({size:,} bytes) as a PyTorch checkpoint: {type(error).__name__}: "
        f"{str(error).splitlines()[0] if str(error) else ''}. The file may be truncated (an interrupted download?) "
        "or not a .pth file; download it again."
    )


def strip_fairseq_prefix(key: str) -> str:
    """`encoder.sentence_encoder.layers.0.fc1.weight` -> `layers.0.fc1.weight`, exactly as the original loader."""
    if "sentence_encoder" in key:
        key = "".join(key.split("sentence_encoder.")[1:])
    if "encoder." in key:
        key = "".join(key.split("encoder.")[1:])
    return key


def _split_checkpoint(
    checkpoint: Mapping[str, Any],
) -> tuple[dict[str, Any] | None, Mapping[str, torch.Tensor]]:
    if not isinstance(checkpoint, Mapping):
        raise CheckpointError(
            f"Not an original RNA-FM checkpoint: the file holds a {type(checkpoint).__name__}, not a dict with 'args' "
            "and 'model' or a state dict."
        )
    if "model" in checkpoint and isinstance(checkpoint["model"], Mapping):
        args = checkpoint.get("args")
        if args is not None and not isinstance(args, argparse.Namespace):
            raise CheckpointError(
                f"The checkpoint's training arguments are a {type(args).__name__}, not the argparse.Namespace "
                "fairseq writes; the original loader cannot read this file (it reads args.arch)."
            )
        args = vars(args) if args is not None else {}
        # fairseq names: encoder_layers -> layers, encoder_embed_dim -> embed_dim, ...
        args = {("".join(k.split("encoder_")[1:]) if "encoder_" in k else k): v for k, v in args.items()}
        return args or None, checkpoint["model"]
    if checkpoint and all(isinstance(value, torch.Tensor) for value in checkpoint.values()):
        return None, checkpoint
    raise CheckpointError(
        "Not an original RNA-FM checkpoint: expected a dict with 'args' and 'model', or a bare state dict of "
        f"tensors; found the keys {sorted(checkpoint)[:10]}."
    )


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _config_from(
    args: dict[str, Any] | None,
    state: Mapping[str, torch.Tensor],
    overrides: dict,
    sources: dict[str, str],
) -> RnaFmConfig:
    """The config the file describes. `sources` receives where `token_dropout` and the head count came from."""
    vocab_size, hidden_size = state["embed_tokens.weight"].shape
    preset = VOCABULARIES[vocab_size]
    layer_ids = {int(m.group(1)) for k in state if (m := re.match(r"layers\.(\d+)\.", k))}
    values: dict[str, Any] = {
        "vocab_size": vocab_size,
        "hidden_size": hidden_size,
        "num_hidden_layers": len(layer_ids),
        "intermediate_size": state["layers.0.fc1.weight"].shape[0]
        if "layers.0.fc1.weight" in state
        else preset["intermediate_size"],
        "num_attention_heads": preset["num_attention_heads"],
        "max_position_embeddings": state["embed_positions.weight"].shape[0],
        "emb_layer_norm_before": any(k.startswith("emb_layer_norm_before") for k in state),
        # fm reads getattr(args, "token_dropout", False): absent means off.
        "token_dropout": False,
        "mask_token_id": preset["mask_token_id"],
        "k_mer": preset["k_mer"],
    }
    for key in ("num_attention_heads", "token_dropout"):
        if key in overrides:
            sources.setdefault(key, "given")
    if args is not None:
        if lacking := [name for name in FM_REQUIRED_ARGS if name not in args]:
            raise CheckpointError(
                "The checkpoint's training arguments lack "
                + ", ".join(FAIRSEQ_NAMES.get(name, name) for name in lacking)
                + ", which the original loader needs to build the model; the file is damaged or not an RNA-FM "
                "checkpoint."
            )
        if args["arch"] != "roberta_large":
            raise CheckpointError(
                f"Unknown architecture {args['arch']!r}: the original loader only reads 'roberta_large'."
            )
        heads = args.get("attention_heads", values["num_attention_heads"])
        if not _positive_int(heads):
            raise CheckpointError(
                f"The checkpoint's training arguments give encoder_attention_heads={heads!r}; the head count must "
                "be a positive whole number. The file is damaged or not an RNA-FM checkpoint."
            )
        values["num_attention_heads"] = heads
        values["token_dropout"] = bool(args.get("token_dropout", False))
        stated = (
            "the file's training arguments"
            if "token_dropout" in args
            else "fm's default (absent from the file's training arguments)"
        )
        sources |= {"token_dropout": stated, "num_attention_heads": "the file's training arguments"}
        for ours, theirs in (
            ("hidden_dropout_prob", "dropout"),
            ("attention_probs_dropout_prob", "attention_dropout"),
        ):
            if isinstance(args.get(theirs), (int, float)) and 0 <= args[theirs] <= 1:
                values[ours] = float(args[theirs])
        declared = {
            "num_hidden_layers": args.get("layers"),
            "hidden_size": args.get("embed_dim"),
            "intermediate_size": args.get("ffn_embed_dim"),
            "max_position_embeddings": (
                args["max_positions"] + PADDING_IDX + 1
                if isinstance(args.get("max_positions"), int)
                else args.get("max_positions")
            ),
        }
        clashes = [
            f"{k}: args say {v!r}, weights say {values[k]}"
            for k, v in declared.items()
            if v is not None and v != values[k]
        ]
        if clashes:
            raise CheckpointError(
                "The checkpoint's arguments disagree with its weights: " + "; ".join(clashes)
            )
        contradicted = [
            f"{key}={value!r} (the file says {values[key]!r})"
            for key, value in overrides.items()
            if key in ("num_attention_heads", "token_dropout") and value != values[key]
        ]
        if contradicted:
            raise CheckpointError(
                "The checkpoint stores its training arguments, which these settings contradict: "
                + ", ".join(contradicted)
                + ". They are for bare state dicts only; leave them out."
            )
    else:
        sources.setdefault(
            "token_dropout",
            "ASSUMED: the file is a bare state dict without training arguments; fm's default token_dropout=False "
            "(fm reads getattr(args, 'token_dropout', False)) was used",
        )
        regression = state.get(CONTACT_REGRESSION_KEYS[0])
        maps = regression.shape[-1] if regression is not None and regression.ndim == 2 else 0
        if (
            "num_attention_heads" not in overrides
            and maps
            and values["num_hidden_layers"]
            and not maps % values["num_hidden_layers"]
        ):
            values["num_attention_heads"] = maps // values["num_hidden_layers"]
            sources["num_attention_heads"] = (
                f"the width of the contact regression in the file ({maps} attention maps over "
                f"{values['num_hidden_layers']} layers)"
            )
        sources.setdefault(
            "num_attention_heads",
            f"ASSUMED: the file is a bare state dict, which does not store the head count (nor holds a contact "
            f"regression to read it from); {values['num_attention_heads']} (all released models) was used",
        )
    values.update(overrides)
    if (
        not _positive_int(values["num_attention_heads"])
        or values["hidden_size"] % values["num_attention_heads"]
    ):
        raise CheckpointError(
            f"Width {values['hidden_size']} cannot be split into {values['num_attention_heads']!r} attention heads; "
            + (
                "the head count is not stored in the weights: pass num_attention_heads=...."
                if args is None
                else "the file's training arguments are damaged."
            )
        )
    return RnaFmConfig(**values)


def expected_original_keys(config: RnaFmConfig) -> set[str]:
    """Keys (fairseq prefixes stripped) that the original model of this shape has, contact regression aside."""
    keys = {"embed_tokens.weight", "embed_positions.weight", "lm_head.weight", "lm_head.bias"}
    norms = ["emb_layer_norm_after", "lm_head.layer_norm"]
    norms += ["emb_layer_norm_before"] if config.emb_layer_norm_before else []
    for i in range(config.num_hidden_layers):
        norms += [f"layers.{i}.{part}" for part in _LAYER_PARTS]
    keys |= {f"{name}.{p}" for name in [*norms, "lm_head.dense"] for p in ("weight", "bias")}
    return keys


def expected_ss_head_keys(blocks: int) -> set[str]:
    """Keys of the original secondary-structure head (`PairwiseConcatWithResNet`) with this many residual blocks."""
    keys = {
        f"{name}.{p}" for name in ("pre_reduction", "proj.first.0", "proj.final") for p in ("weight", "bias")
    }
    for k in range(blocks):
        keys |= {f"proj.resnet.{k}.bn1.{p}" for p in ("weight", "bias", "running_mean", "running_var")}
        keys |= {f"proj.resnet.{k}.bn1.num_batches_tracked", f"proj.resnet.{k}.conv1.weight"}
        keys.add(f"proj.resnet.{k}.conv2.weight")
    return keys


def ss_head_key(original_key: str) -> str:
    """`proj.resnet.3.conv2.weight` (original head key) -> `ss_head.blocks.3.conv2.weight` (ours)."""
    for pattern, replacement in _SS_HEAD_KEY_RULES:
        if re.fullmatch(pattern, original_key):
            return re.sub(pattern, replacement, original_key)
    raise KeyError(f"Not a key of the original secondary-structure head: {original_key}")


def _read_ss_head(
    head_state: Mapping[str, torch.Tensor],
) -> tuple[str, dict[str, int], dict[str, torch.Tensor]]:
    """The one ResNet head of a secondary-structure file: its module name, the config values its shapes give, and
    its tensors under our names."""
    names = sorted({key.split(".", 1)[0] for key in head_state})
    predictor = names[0].split(":")[0].split("_") if len(names) == 1 else []
    if len(predictor) != 4 or predictor[0] != SS_HEAD_TYPE or predictor[1:3] != ["1", "sym"]:
        raise CheckpointError(
            f"Expected one symmetric one-class ResNet head ({SS_HEAD_TYPE}_1_sym_...:r-ss) under {HEAD_PREFIX}, "
            f"found {names}; other downstream heads of the original code are not supported."
        )
    name = names[0]
    tensors = {key.split(".", 1)[1]: value for key, value in head_state.items() if "." in key}
    blocks = {int(m.group(1)) for key in tensors if (m := re.match(r"proj\.resnet\.(\d+)\.", key))}
    expected = expected_ss_head_keys(len(blocks))
    missing, unexpected = expected - set(tensors), set(tensors) - expected
    if missing or unexpected:
        raise _mismatch(missing, unexpected, "secondary-structure head")
    values = {
        "ss_head_reduction": tensors["pre_reduction.weight"].shape[0],
        "ss_head_channels": tensors["proj.first.0.weight"].shape[0],
        "ss_head_blocks": len(blocks),
    }
    converted = {ss_head_key(key): tensor for key, tensor in tensors.items()}
    return name, values, converted


def _mismatch(missing: set[str], unexpected: set[str], what: str) -> CheckpointError:
    def listing(keys: set[str]) -> str:
        shown = sorted(keys)[:20]
        return f"{shown}" + (f" and {len(keys) - 20} more" if len(keys) > 20 else "")

    return CheckpointError(
        f"The checkpoint does not match the {what} architecture.\n"
        f"  Missing keys ({len(missing)}): {listing(missing)}\n"
        f"  Unexpected keys ({len(unexpected)}): {listing(unexpected)}"
    )


def _check_kind(requested: str, detected: str | None, has_head: bool, vocab_size: int | None) -> None:
    if requested not in KINDS:
        raise CheckpointError(f"Unknown kind {requested!r}; choose one of {', '.join(KINDS)}.")
    if requested == "rna-fm-ss" and not has_head:
        raise CheckpointError(
            "kind 'rna-fm-ss' was requested, but the checkpoint has no secondary-structure head "
            f"({HEAD_PREFIX}* keys next to {BACKBONE_PREFIX}*)."
        )
    wanted_vocab = MRNA_FM_PRESET["vocab_size"] if requested == "mrna-fm" else RNA_FM_PRESET["vocab_size"]
    if vocab_size is not None and vocab_size != wanted_vocab:
        raise CheckpointError(
            f"kind {requested!r} was requested, but the checkpoint's token embedding has {vocab_size} rows "
            f"(the file looks like {detected!r}); {requested} has {wanted_vocab}."
        )


def read_original(
    checkpoint: str | os.PathLike | Mapping[str, Any],
    kind: str | None = None,
    *,
    backbone: str | os.PathLike | None = None,
    **config_overrides: Any,
) -> OriginalCheckpoint:
    """
    Read an original checkpoint (a path, or the loaded dict) and say what it is.

    Accepts `{"args": Namespace, "model": state_dict}` with either fairseq key prefix
    (`encoder.sentence_encoder.*` or `encoder.encoder.*`), a bare state dict, or a secondary-structure state dict
    (`backbone.*` + `downstream_modules.*`). `kind` ("rna-fm", "mrna-fm", "rna-fm-ss") overrides the detection;
    asking for "rna-fm" on a secondary-structure file takes its backbone only.

    What a file does not store is taken where the original takes it, and recorded in `sources`:

    - A secondary-structure file is read as `fm.downstream` reads it, on top of its RNA-FM backbone: `token_dropout`
      and the head count come from `backbone` (the original `RNA-FM_pretrained.pth`, local or `hf://`, or a
      converted rna-fm folder), else from `RNA-FM_pretrained.pth` next to the file or in torch hub's cache; the
      backbone's weights must equal those in the structure file. With no backbone anywhere, fm's defaults are
      used (`token_dropout` off, 20 heads) and marked as assumed. The pairing threshold is the original
      prediction config's for the head the file name names (PDB-All, bpRNA, PDB-TR1), else 0.5.
    - A bare language-model state dict takes fm's default `token_dropout` (off) and 20 heads, marked as assumed.

    Any config field can be overridden (`num_attention_heads=...`, `token_dropout=...`, `ss_threshold=...`); the
    two training settings only where the file and its backbone do not store them. Missing, unexpected, misshapen,
    non-floating or non-finite tensors raise a `CheckpointError` that names them.
    """
    path = None
    if not isinstance(checkpoint, Mapping):
        path = checkpoint
        checkpoint = load_original_file(checkpoint)
    args, raw_state = _split_checkpoint(checkpoint)
    head_state: dict[str, torch.Tensor] = {}
    backbone_only = any(k.startswith(BACKBONE_PREFIX) for k in raw_state) and not any(
        k.startswith(HEAD_PREFIX) for k in raw_state
    )
    if any(k.startswith(BACKBONE_PREFIX) for k in raw_state):
        head_state = {
            k.removeprefix(HEAD_PREFIX): v for k, v in raw_state.items() if k.startswith(HEAD_PREFIX)
        }
        raw_state = {
            k.removeprefix(BACKBONE_PREFIX): v for k, v in raw_state.items() if not k.startswith(HEAD_PREFIX)
        }
    state = {strip_fairseq_prefix(k): v for k, v in raw_state.items()}
    embedding = state.get("embed_tokens.weight")
    vocab_size = embedding.shape[0] if embedding is not None and embedding.ndim == 2 else None
    detected = "rna-fm-ss" if head_state else _KIND_OF_VOCABULARY.get(vocab_size)
    if kind is not None:
        _check_kind(kind, detected, bool(head_state), vocab_size)
    if vocab_size is not None and vocab_size not in VOCABULARIES:
        raise CheckpointError(
            f"The token embedding has {vocab_size} rows; RNA-FM has 25 (nucleotides) and mRNA-FM 73 (codons)."
        )
    if vocab_size is None or "embed_positions.weight" not in state or "layers.0.fc1.weight" not in state:
        # Not recognisably RNA-FM: list the differences against the RNA-FM layout of this depth.
        layer_ids = {int(m.group(1)) for k in state if (m := re.match(r"layers\.(\d+)\.", k))}
        expected = expected_original_keys(RnaFmConfig(num_hidden_layers=max(layer_ids, default=11) + 1))
        raise _mismatch(expected - set(state), set(state) - expected - set(CONTACT_REGRESSION_KEYS), "RNA-FM")
    kind = kind or detected
    if backbone is not None and not head_state:
        raise CheckpointError(
            f"A backbone was given, but the file is {kind}, not a secondary-structure file; backbones are for "
            "secondary-structure files only (their own file does not store the backbone's settings)."
        )
    head_name, head_values, head_tensors = None, {}, {}
    sources: dict[str, str] = {}
    settings = None
    if head_state:  # a structure file, whole or (kind "rna-fm") its backbone only: read on its backbone
        settings = backbone_settings(path, backbone)
        config_overrides = _structure_overrides(settings, config_overrides, sources)
    if kind == "rna-fm-ss":
        head_name, head_values, head_tensors = _read_ss_head(head_state)
        if "ss_threshold" in config_overrides:
            sources["ss_threshold"] = "given"
        else:
            config_overrides["ss_threshold"], sources["ss_threshold"] = head_threshold(path)
    config = _config_from(args, state, {**head_values, **config_overrides}, sources)
    expected = expected_original_keys(config)
    missing, unexpected = expected - set(state), set(state) - expected - set(CONTACT_REGRESSION_KEYS)
    if missing or unexpected:
        raise _mismatch(missing, unexpected, "mRNA-FM" if kind == "mrna-fm" else "RNA-FM")

    converted, origin = {}, {}
    for key, tensor in state.items():
        if key == "lm_head.weight":
            continue  # tied: stored once, as the token embedding
        for pattern, replacement in _KEY_RULES:
            if re.fullmatch(pattern, key):
                ours = re.sub(pattern, replacement, key)
                converted[ours], origin[ours] = tensor, (BACKBONE_PREFIX if head_state else "") + key
                break
    converted |= head_tensors
    origin |= {
        ss_head_key(key.split(".", 1)[1]): HEAD_PREFIX + key for key in head_state if kind == "rna-fm-ss"
    }
    regression = state.get(CONTACT_REGRESSION_KEYS[0])
    maps = config.num_hidden_layers * config.num_attention_heads
    if settings is not None and settings.found and regression is not None and regression.shape[-1] != maps:
        raise CheckpointError(
            f"The backbone {settings.location} gives {config.num_attention_heads} attention heads, but the structure "
            f"file's contact regression holds {regression.shape[-1]} weights, one per layer and head of the backbone "
            f"it was trained on ({config.num_hidden_layers} layers): this backbone is not that one. Pass the RNA-FM "
            "file the head was trained with, or leave --backbone out to read the head count from the file."
        )
    embedding_key = "rnafm.embeddings.word_embeddings.weight"
    untied = state["lm_head.weight"].shape != state["embed_tokens.weight"].shape or not torch.equal(
        state["lm_head.weight"], state["embed_tokens.weight"]
    )
    if untied:
        # fm's model has one parameter for both, and load_state_dict copies lm_head.weight into it last: that copy
        # is the one fm computes with.
        converted[embedding_key] = state["lm_head.weight"]
        origin[embedding_key] = (BACKBONE_PREFIX if head_state else "") + "lm_head.weight"
    _check_tensors(converted, origin, config, path)
    # fm's loader zeroes the <mask> row of embed_tokens.weight in place, then load_state_dict copies embed_tokens.weight
    # and, last, lm_head.weight into the one tied parameter: the zeroing survives only where the file's two tensors
    # share memory (as torch.save of a model's state_dict leaves them); a file whose lm_head.weight is a separate copy
    # (cast tensor by tensor, say) keeps the row. fm.downstream loads a structure file's weights as they are.
    zero_mask_row = not head_state and _same_memory(state["lm_head.weight"], state["embed_tokens.weight"])
    if zero_mask_row:
        embeddings = converted[embedding_key].clone()
        embeddings[config.mask_token_id].zero_()
        converted[embedding_key] = embeddings
    if settings is not None:
        check_backbone_weights(converted, settings)
        settings.state_dict = None  # compared; a converted backbone folder's weights need not stay in memory
    notes = []
    if untied:
        notes.append(
            "lm_head.weight differs from embed_tokens.weight. RNA-FM ties them into one parameter, into which fm's "
            "loader copies lm_head.weight last, so that copy was used for both, as fm computes with it."
        )
    elif not head_state and not zero_mask_row:
        notes.append(
            "lm_head.weight is stored apart from embed_tokens.weight, so the original loader's zeroing of the <mask> "
            "embedding row is undone when it loads this file; the row was kept as stored, as fm does."
        )
    if backbone_only:
        notes.append(
            f"The file holds a {BACKBONE_PREFIX}* model without a secondary-structure head ({HEAD_PREFIX}*); "
            "it was read as plain RNA-FM."
        )
    elif head_state and kind != "rna-fm-ss":
        notes.append(
            f"--kind {kind}: the secondary-structure head ({len(head_state)} tensors under {HEAD_PREFIX}) was left "
            "out; only the backbone was read."
        )
    config.conversion_sources = dict(sources) or None
    return OriginalCheckpoint(
        notes=notes,
        kind=kind,
        config=config,
        state_dict=converted,
        head_name=head_name,
        args=args,
        sources=sources,
        backbone=settings,
    )


def _structure_overrides(
    settings: BackboneSettings, overrides: dict[str, Any], sources: dict[str, str]
) -> dict[str, Any]:
    """The config overrides for a structure file: the backbone's training settings. Without a backbone, a setting
    given explicitly is used, and the head count is left to the file (its contact regression has one weight per
    layer and head)."""
    overrides = dict(overrides)
    for key, from_backbone in settings.values.items():
        if key not in overrides:
            overrides[key], sources[key] = from_backbone, settings.sources[key]
        elif settings.found and overrides[key] != from_backbone:
            raise CheckpointError(
                f"{key}={overrides[key]!r} was given, but the backbone says {from_backbone!r} "
                f"({settings.sources[key]}); leave it out."
            )
        else:
            sources[key] = settings.sources[key] if settings.found else "given"
    return overrides


def _expected_shapes(config: RnaFmConfig) -> dict[str, torch.Size]:
    """Shapes of every tensor our classes hold for this config (built on the meta device: no memory)."""
    from .modeling_rnafm import RnaFmForMaskedLM, RnaFmForSecondaryStructure

    shapes: dict[str, torch.Size] = {}
    with torch.device("meta"):
        for model_class in (RnaFmForMaskedLM, RnaFmForSecondaryStructure):
            shapes |= {key: tensor.shape for key, tensor in model_class(config).state_dict().items()}
    # The contact regression: one weight per attention map (building that model would warn it is untrained).
    maps = config.num_hidden_layers * config.num_attention_heads
    shapes |= {CONTACT_REGRESSION_KEYS[0]: torch.Size([1, maps]), CONTACT_REGRESSION_KEYS[1]: torch.Size([1])}
    return shapes


def _same_memory(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Whether `a` and `b` view the same memory (storage, offset and strides), so that writing one writes the other."""
    return (
        a.untyped_storage().data_ptr() == b.untyped_storage().data_ptr()
        and a.storage_offset() == b.storage_offset()
        and a.stride() == b.stride()
    )


def _check_tensors(
    converted: Mapping[str, torch.Tensor],
    origin: Mapping[str, str],
    config: RnaFmConfig,
    path: str | os.PathLike | None,
) -> None:
    """Refuse tensors of the wrong shape, of an integer type, or holding NaN or infinity, naming the first ones by
    their names in the file (fairseq prefixes stripped)."""
    expected = _expected_shapes(config)
    problems = []
    for key, tensor in converted.items():
        name = origin.get(key, key)
        counter = key.endswith("num_batches_tracked")
        if key in expected and tensor.shape != expected[key]:
            problems.append(f"{name} has shape {tuple(tensor.shape)}, expected {tuple(expected[key])}")
        elif not counter and not tensor.is_floating_point():
            problems.append(f"{name} holds {tensor.dtype} numbers; weights are floating point")
        elif not counter and not is_finite(tensor):
            bad = int((~torch.isfinite(tensor)).sum())
            problems.append(f"{name} holds {bad} NaN or infinite value{'s' if bad > 1 else ''}")
    if problems:
        where = f"{path}: " if path is not None else ""
        shown = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
        raise CheckpointError(
            f"{where}{len(problems)} tensor{'s are' if len(problems) > 1 else ' is'} unusable ({shown}), so this "
            "file cannot give the original's numbers. It is damaged (download it again) or not an RNA-FM file."
        )


def read_original_checkpoint(
    checkpoint: str | os.PathLike | Mapping[str, Any], **config_overrides: Any
) -> tuple[RnaFmConfig, dict[str, torch.Tensor]]:
    """
    Turn an original checkpoint (a path, or the loaded dict) into `(config, state_dict)` for our classes.

    The state dict uses the key names of `RnaFmForMaskedLM` plus `contact_head.regression.*` when the file has
    them; see `read_original` for the accepted layouts and the overrides.

    Example:

    ```python
    >>> from rnafm_hf import RnaFmForMaskedLM, read_original_checkpoint
    >>> config, state_dict = read_original_checkpoint("RNA-FM_pretrained.pth")  # doctest: +SKIP
    >>> model = RnaFmForMaskedLM(config).eval()  # doctest: +SKIP
    >>> model.load_state_dict(state_dict, strict=False)  # doctest: +SKIP

    ```
    """
    original = read_original(checkpoint, **config_overrides)
    return original.config, original.state_dict


def build_model(
    original: OriginalCheckpoint, model_class: type[RnaFmPreTrainedModel] | None = None
) -> RnaFmPreTrainedModel:
    """
    Our model (default `RnaFmForMaskedLM`) holding the checkpoint's tensors without copying them, in eval mode.

    Weights of heads the chosen class lacks are left out; a head the file lacks (the contact regression, usually,
    or the secondary-structure head of a plain RNA-FM file) keeps its fresh initialisation.
    """
    from .modeling_rnafm import RnaFmForMaskedLM

    model_class = model_class or RnaFmForMaskedLM
    # Built on the meta device and given the checkpoint's (memory-mapped) tensors as they are: no random
    # initialisation and no copy of 100 M parameters.
    with torch.device("meta"):
        model = model_class(original.config)
    state = original.state_dict
    if isinstance(model, RnaFmModel):
        state = {k.removeprefix("rnafm."): v for k, v in state.items() if k.startswith("rnafm.")}
    own_keys = set(model.state_dict())
    missing, _ = model.load_state_dict(
        {k: v for k, v in state.items() if k in own_keys}, strict=False, assign=True
    )
    model.tie_weights()
    # What the file lacks (the contact regression, usually) is initialised fresh.
    for module in model.modules():
        if any(t.is_meta for t in [*module.parameters(recurse=False), *module.buffers(recurse=False)]):
            module.to_empty(device="cpu", recurse=False)
            model._init_weights(module)
    if any(k.startswith("ss_head.") for k in missing):
        model._init_weights(
            model.ss_head
        )  # the original's initialisation of a fresh head, as from_pretrained gives
    fresh = ("contact_head.", "ss_head.")
    missing = [k for k in missing if not k.startswith(fresh) and k != "lm_head.decoder.weight"]
    if missing:
        raise CheckpointError(f"{model_class.__name__} needs weights the checkpoint lacks: {missing}")
    return model.eval()


def load_original_checkpoint(
    checkpoint: str | os.PathLike | Mapping[str, Any],
    model_class: type[RnaFmPreTrainedModel] | None = None,
    **config_overrides: Any,
) -> RnaFmPreTrainedModel:
    """
    Build one of our models (default `RnaFmForMaskedLM`) from an original checkpoint, in eval mode.

    Weights of heads the chosen class lacks are left out; a head the file lacks (the contact regression, usually)
    keeps its fresh initialisation.
    """
    return build_model(read_original(checkpoint, **config_overrides), model_class)


def to_original_structure_checkpoint(
    model: RnaFmPreTrainedModel, ss_head: torch.nn.Module, head_name: str = DEFAULT_SS_HEAD_NAME
) -> dict[str, torch.Tensor]:
    """
    The layout of `RNA-FM-ResNet_PDB-All.pth`: the state dict of the original `fm.downstream.Baseline`, the masked-LM
    `model`'s weights under `backbone.` and the `RnaFmSecondaryStructureHead` under `downstream_modules.<head_name>.`.
    Like fm's `Baseline`, it holds the backbone's contact regression: the model's own, or a freshly initialised one
    (as fm builds it when the backbone file has none).
    """
    backbone = to_original_checkpoint(model)["model"]
    state = {BACKBONE_PREFIX + strip_fairseq_prefix(key): tensor for key, tensor in backbone.items()}
    if not any(key.startswith(BACKBONE_PREFIX + "contact_head.") for key in state):
        config = model.config
        regression = torch.nn.Linear(config.num_hidden_layers * config.num_attention_heads, 1)
        state |= {
            f"{BACKBONE_PREFIX}contact_head.regression.{k}": v.detach()
            for k, v in regression.state_dict().items()
        }
    blocks = len(ss_head.blocks)
    ours = {f"ss_head.{key}": tensor for key, tensor in ss_head.state_dict().items()}
    for key in expected_ss_head_keys(blocks):
        state[f"{HEAD_PREFIX}{head_name}.{key}"] = ours[ss_head_key(key)].detach().clone()
    return state


def fairseq_args(config: RnaFmConfig) -> argparse.Namespace:
    """The training arguments of the original files (fairseq names) that describe a model of this config."""
    return argparse.Namespace(
        arch="roberta_large",
        encoder_layers=config.num_hidden_layers,
        encoder_embed_dim=config.hidden_size,
        encoder_ffn_embed_dim=config.intermediate_size,
        encoder_attention_heads=config.num_attention_heads,
        max_positions=config.max_position_embeddings - PADDING_IDX - 1,
        token_dropout=config.token_dropout,
        dropout=config.hidden_dropout_prob,
        attention_dropout=config.attention_probs_dropout_prob,
    )


def to_original_checkpoint(model: RnaFmPreTrainedModel) -> dict[str, Any]:
    """
    The inverse of `read_original`: `{"args": Namespace, "model": state_dict}` in the layout of the released files
    (`encoder.sentence_encoder.*` body, `encoder.lm_head.*` head), readable by the original `fm` loader.

    Takes `RnaFmForMaskedLM` or `RnaFmForContactPrediction` (whose missing LM head is then left out, as fm cannot
    load that); `torch.save` the result.
    """
    if hasattr(model, "ss_head"):
        raise ValueError(
            "to_original_checkpoint writes the language-model files; the original secondary-structure file also needs "
            "the LM head, which RnaFmForSecondaryStructure does not hold."
        )
    renames = [
        (r"rnafm\.embeddings\.word_embeddings\.", "embed_tokens."),
        (r"rnafm\.embeddings\.position_embeddings\.", "embed_positions."),
        (r"rnafm\.embeddings\.layer_norm\.", "emb_layer_norm_before."),
        (r"rnafm\.encoder\.", ""),
    ]
    state = {}
    for key, tensor in model.state_dict().items():
        if key == "lm_head.decoder.weight":
            continue
        for pattern, replacement in renames:
            key = re.sub(f"^{pattern}", replacement, key)
        head = key.startswith(("lm_head.", "contact_head."))
        state[("encoder." if head else "encoder.sentence_encoder.") + key] = tensor.detach().clone()
    if "encoder.lm_head.bias" in state:
        state["encoder.lm_head.weight"] = state["encoder.sentence_encoder.embed_tokens.weight"]
    return {"args": fairseq_args(model.config), "model": state}


__all__ = [
    "CheckpointError",
    "KINDS",
    "OriginalCheckpoint",
    "build_model",
    "expected_original_keys",
    "load_original_checkpoint",
    "load_original_file",
    "read_original",
    "read_original_checkpoint",
    "strip_fairseq_prefix",
    "to_original_checkpoint",
    "to_original_structure_checkpoint",
]
