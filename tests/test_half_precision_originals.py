"""Half-precision original files: the converted folder must compute what fm's own loader computes on the same file.

An original `.pth` in half precision is `{"args", "model"}` with float16 tensors. Written from a model
(`model.half().state_dict()`), `lm_head.weight` and `embed_tokens.weight` are one tensor in the file; cast tensor by
tensor (`{k: v.half() for k, v in state.items()}`, the usual way to halve a file) they are two equal copies. fm's
loader zeroes the `<mask>` row of `embed_tokens.weight` in place and then copies both keys into its one tied
parameter, `lm_head.weight` last: with two copies the zeroing is undone and fm keeps the stored `<mask>` row, which
changes the `<mask>` logit column always and, without token dropout, every output for inputs holding `<mask>`.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

pytest.importorskip("fm")

from original_checkpoints import load_with_fm, random_fm_model  # noqa: E402
from transformers import AutoModelForMaskedLM  # noqa: E402

import rnafm_hf  # noqa: E402, F401  (registers the Auto classes)
from rnafm_hf.conversion import convert_checkpoint  # noqa: E402

TOLERANCE = 1e-5
SEQUENCES = [("a", "GGGUGCGAUCAUACCAGCACUAAUG"), ("b", "ACGUNACGGUUCA"), ("c", "AUGCCG")]
# (sequence, position) replaced by <mask>: position 0 is <cls>.
MASKED = [(0, 3), (0, 11), (1, 5)]


def write_half_original(path: Path, cast: str, token_dropout: bool) -> Path:
    """A tiny original RNA-FM file in float16, written from fm's own classes."""
    model, args, _ = random_fm_model("rna", 2, 32, 64, 4, token_dropout, True, seed=3)
    if cast == "model.half()":
        state = model.half().state_dict()
    else:
        state = {key: tensor.half() for key, tensor in model.state_dict().items()}
    state = {
        ("encoder." if key.startswith("lm_head") else "encoder.sentence_encoder.") + key: tensor
        for key, tensor in state.items()
        if not key.startswith("contact_head")
    }
    torch.save({"args": args, "model": state}, path)
    return path


def max_diffs(folder: Path, path: Path) -> dict[str, float]:
    """Max abs differences over the real tokens between our converted folder and fm's own loading of the file."""
    reference, alphabet = load_with_fm(path)
    ours = AutoModelForMaskedLM.from_pretrained(
        folder, dtype=torch.float32, attn_implementation="eager"
    ).eval()
    _, _, ids = alphabet.get_batch_converter()(SEQUENCES)
    for row, column in MASKED:
        ids[row, column] = alphabet.mask_idx
    attention_mask = ids.ne(alphabet.padding_idx)
    with torch.inference_mode():
        expected = reference(ids, repr_layers=list(range(reference.num_layers + 1)), need_head_weights=True)
        found = ours(input_ids=ids, attention_mask=attention_mask.long(), output_hidden_states=True)
    diffs = {
        f"layer {i}": (h - expected["representations"][i]).abs()[attention_mask].max().item()
        for i, h in enumerate(found.hidden_states)
    }
    diffs["logits"] = (found.logits - expected["logits"]).abs()[attention_mask].max().item()
    return diffs


@pytest.mark.parametrize("token_dropout", [True, False], ids=["token-dropout", "no-token-dropout"])
@pytest.mark.parametrize("cast", ["model.half()", "tensor by tensor"])
def test_half_precision_original_matches_fm_loader(tmp_path, cast, token_dropout):
    path = write_half_original(tmp_path / "RNA-FM_half.pth", cast, token_dropout)
    stored = torch.load(path, map_location="cpu")["model"]
    embedding, head = stored["encoder.sentence_encoder.embed_tokens.weight"], stored["encoder.lm_head.weight"]
    assert embedding.dtype == head.dtype == torch.float16
    shared = embedding.untyped_storage().data_ptr() == head.untyped_storage().data_ptr()
    assert shared == (cast == "model.half()")

    folder = tmp_path / "converted"
    result = convert_checkpoint(path, folder, verify=True)  # float32 output
    assert result.report.passed

    diffs = max_diffs(folder, path)
    assert max(diffs.values()) <= TOLERANCE, diffs


def test_half_precision_original_to_float16_folder_matches_fm_loader(tmp_path):
    """float16 weights are stored exactly in a float16 folder, so it too computes what fm computes, in float32."""
    path = write_half_original(tmp_path / "RNA-FM_half.pth", "tensor by tensor", token_dropout=True)
    folder = tmp_path / "converted"
    convert_checkpoint(path, folder, verify=True, dtype="float16")
    diffs = max_diffs(folder, path)
    assert max(diffs.values()) <= TOLERANCE, diffs
