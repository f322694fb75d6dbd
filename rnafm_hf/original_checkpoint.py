"""Read the original RNA-FM / mRNA-FM `.pth` files into an `RnaFmConfig` and a state dict for our classes.

This reproduces `fm.pretrained.load_model_and_alphabet_local`: fairseq argument and key prefixes stripped, sizes
and `token_dropout` read from the file's arguments, `emb_layer_norm_before` switched on by the presence of its
weights, and the `<mask>` row of the token embeddings zeroed. Files are opened with `weights_only=True`, allowing
only `argparse.Namespace`, so a file cannot run code while it loads.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
from collections.abc import Mapping
from typing import Any

import torch

from .configuration_rnafm import MRNA_FM_PRESET, RNA_FM_PRESET, RnaFmConfig
from .modeling_rnafm import RnaFmModel, RnaFmPreTrainedModel

PADDING_IDX = 1
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
CONTACT_REGRESSION_KEYS = ("contact_head.regression.weight", "contact_head.regression.bias")
VOCABULARIES = {RNA_FM_PRESET["vocab_size"]: RNA_FM_PRESET, MRNA_FM_PRESET["vocab_size"]: MRNA_FM_PRESET}


def load_original_file(path: str | os.PathLike) -> Any:
    """`torch.load` an original file safely: tensors and `argparse.Namespace` only, nothing executed."""
    # The context manager removes what it added on exit, so leave a caller's own allow-list untouched.
    already_allowed = argparse.Namespace in torch.serialization.get_safe_globals()
    with (
        contextlib.nullcontext()
        if already_allowed
        else torch.serialization.safe_globals([argparse.Namespace])
    ):
        return torch.load(path, map_location="cpu", weights_only=True)


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
    if "model" in checkpoint and isinstance(checkpoint["model"], Mapping):
        args = checkpoint.get("args")
        args = vars(args) if isinstance(args, argparse.Namespace) else dict(args or {})
        # fairseq names: encoder_layers -> layers, encoder_embed_dim -> embed_dim, ...
        return {
            ("".join(k.split("encoder_")[1:]) if "encoder_" in k else k): v for k, v in args.items()
        }, checkpoint["model"]
    if all(isinstance(value, torch.Tensor) for value in checkpoint.values()):
        return None, checkpoint
    raise ValueError(
        "Not an original RNA-FM checkpoint: expected a dict with 'args' and 'model', or a bare state dict of "
        f"tensors; found the keys {sorted(checkpoint)[:10]}."
    )


def _config_from(
    args: dict[str, Any] | None, state: Mapping[str, torch.Tensor], overrides: dict
) -> RnaFmConfig:
    vocab_size, hidden_size = state["embed_tokens.weight"].shape
    if vocab_size not in VOCABULARIES:
        raise ValueError(
            f"The token embedding has {vocab_size} rows; RNA-FM has 25 (nucleotides) and mRNA-FM 73 (codons)."
        )
    preset = VOCABULARIES[vocab_size]
    layer_ids = {int(m.group(1)) for k in state if (m := re.match(r"layers\.(\d+)\.", k))}
    values: dict[str, Any] = {
        "vocab_size": vocab_size,
        "hidden_size": hidden_size,
        "num_hidden_layers": len(layer_ids),
        "intermediate_size": state["layers.0.fc1.weight"].shape[0]
        if layer_ids
        else preset["intermediate_size"],
        "num_attention_heads": preset["num_attention_heads"],
        "max_position_embeddings": state["embed_positions.weight"].shape[0],
        "emb_layer_norm_before": any(k.startswith("emb_layer_norm_before") for k in state),
        "token_dropout": True,
        "mask_token_id": preset["mask_token_id"],
        "k_mer": preset["k_mer"],
    }
    if args is not None:
        if args.get("arch", "roberta_large") != "roberta_large":
            raise ValueError(
                f"Unknown architecture {args['arch']!r}: the original loader only reads 'roberta_large'."
            )
        values["num_attention_heads"] = args.get("attention_heads", values["num_attention_heads"])
        values["token_dropout"] = bool(args.get("token_dropout", False))
        for ours, theirs in (
            ("hidden_dropout_prob", "dropout"),
            ("attention_probs_dropout_prob", "attention_dropout"),
        ):
            if isinstance(args.get(theirs), (int, float)):
                values[ours] = float(args[theirs])
        declared = {
            "num_hidden_layers": args.get("layers"),
            "hidden_size": args.get("embed_dim"),
            "intermediate_size": args.get("ffn_embed_dim"),
            "max_position_embeddings": (
                args["max_positions"] + PADDING_IDX + 1 if "max_positions" in args else None
            ),
        }
        clashes = [
            f"{k}: args say {v}, weights say {values[k]}"
            for k, v in declared.items()
            if v not in (None, values[k])
        ]
        if clashes:
            raise ValueError("The checkpoint's arguments disagree with its weights: " + "; ".join(clashes))
    values.update(overrides)
    if args is None and values["hidden_size"] % values["num_attention_heads"]:
        raise ValueError(
            f"This bare state dict has width {values['hidden_size']}, which {values['num_attention_heads']} heads do "
            "not divide; the head count is not stored in the weights: pass num_attention_heads=..."
        )
    return RnaFmConfig(**values)


def read_original_checkpoint(
    checkpoint: str | os.PathLike | Mapping[str, Any], **config_overrides: Any
) -> tuple[RnaFmConfig, dict[str, torch.Tensor]]:
    """
    Turn an original checkpoint (a path, or the loaded dict) into `(config, state_dict)` for our classes.

    Accepts `{"args": Namespace, "model": state_dict}` with either fairseq key prefix
    (`encoder.sentence_encoder.*` or `encoder.encoder.*`), or a bare state dict. For a bare state dict the head
    count cannot be read from the weights and defaults to 20 (both released models); pass
    `num_attention_heads=...` to override, likewise any other config field. Keys the original model does not have,
    or missing ones, raise a `ValueError` that lists them. The returned state dict uses the key names of
    `RnaFmForMaskedLM` plus `contact_head.regression.*` when the file has them.

    Example:

    ```python
    >>> from rnafm_hf import RnaFmForMaskedLM, read_original_checkpoint
    >>> config, state_dict = read_original_checkpoint("RNA-FM_pretrained.pth")  # doctest: +SKIP
    >>> model = RnaFmForMaskedLM(config).eval()  # doctest: +SKIP
    >>> model.load_state_dict(state_dict, strict=False)  # doctest: +SKIP

    ```
    """
    if not isinstance(checkpoint, Mapping):
        checkpoint = load_original_file(checkpoint)
    args, raw_state = _split_checkpoint(checkpoint)
    state = {strip_fairseq_prefix(k): v for k, v in raw_state.items()}
    for required in ("embed_tokens.weight", "embed_positions.weight"):
        if required not in state:
            raise ValueError(
                f"The checkpoint has no {required!r} (after stripping fairseq prefixes); "
                f"its keys start with {sorted(state)[:5]}. Is this an RNA-FM checkpoint?"
            )
    config = _config_from(args, state, config_overrides)

    converted, unexpected = {}, []
    for key, tensor in state.items():
        for pattern, replacement in _KEY_RULES:
            if re.fullmatch(pattern, key):
                converted[re.sub(pattern, replacement, key)] = tensor
                break
        else:
            unexpected.append(key)
    if "lm_head.decoder.weight" in converted and not torch.equal(
        converted["lm_head.decoder.weight"], converted["rnafm.embeddings.word_embeddings.weight"]
    ):
        raise ValueError(
            "lm_head.weight differs from embed_tokens.weight; RNA-FM ties them, so this file is not one."
        )
    converted.pop("lm_head.decoder.weight", None)  # tied: stored once, as the token embedding
    expected = expected_state_dict_keys(config) - {"lm_head.decoder.weight"}
    missing = sorted(expected - set(converted))
    unexpected += sorted(set(converted) - expected - set(CONTACT_REGRESSION_KEYS))
    if missing or unexpected:
        raise ValueError(
            "The checkpoint does not match the RNA-FM architecture.\n"
            f"  Missing keys ({len(missing)}): {missing}\n"
            f"  Unexpected keys ({len(unexpected)}): {sorted(unexpected)}"
        )
    embeddings = converted["rnafm.embeddings.word_embeddings.weight"].clone()
    embeddings[config.mask_token_id].zero_()  # as the original loader does, for token dropout
    converted["rnafm.embeddings.word_embeddings.weight"] = embeddings
    return config, converted


def expected_state_dict_keys(config: RnaFmConfig) -> set[str]:
    """Keys of a full RNA-FM state dict in our names (backbone and LM head), built on the meta device."""
    from .modeling_rnafm import RnaFmForMaskedLM

    with torch.device("meta"):
        return set(RnaFmForMaskedLM(config).state_dict())


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
    from .modeling_rnafm import RnaFmForMaskedLM

    model_class = model_class or RnaFmForMaskedLM
    config, state = read_original_checkpoint(checkpoint, **config_overrides)
    model = model_class(config)
    if isinstance(model, RnaFmModel):
        state = {k.removeprefix("rnafm."): v for k, v in state.items() if k.startswith("rnafm.")}
    own_keys = set(model.state_dict())
    missing, unexpected = model.load_state_dict(
        {k: v for k, v in state.items() if k in own_keys}, strict=False
    )
    missing = [k for k in missing if not k.startswith("contact_head.") and k != "lm_head.decoder.weight"]
    if missing:
        raise ValueError(f"{model_class.__name__} needs weights the checkpoint lacks: {missing}")
    return model.eval()


__all__ = [
    "load_original_checkpoint",
    "load_original_file",
    "read_original_checkpoint",
    "strip_fairseq_prefix",
]
