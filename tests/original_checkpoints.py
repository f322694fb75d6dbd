"""Write checkpoints in the original RNA-FM file formats, with random but realistically scaled weights."""

from __future__ import annotations

import argparse
import contextlib
import math
import tempfile
import warnings
from pathlib import Path
from unittest import mock

import fm
import torch

EMBEDDING_STD = 0.1
BACKBONE_FILE_NAME = "RNA-FM_pretrained.pth"
PREFIXES = {
    "sentence_encoder": ("encoder.sentence_encoder.", "encoder."),
    "encoder_encoder": ("encoder.encoder.", "encoder."),
    "bare": ("", ""),
}


def original_args(layers: int, embed_dim: int, ffn_embed_dim: int, heads: int, token_dropout: bool):
    """fairseq-style training arguments, with the unrelated entries real files also carry."""
    return argparse.Namespace(
        arch="roberta_large",
        encoder_layers=layers,
        encoder_embed_dim=embed_dim,
        encoder_ffn_embed_dim=ffn_embed_dim,
        encoder_attention_heads=heads,
        max_positions=1024,
        token_dropout=token_dropout,
        dropout=0.1,
        attention_dropout=0.1,
        lr=[0.0001],
        seed=1,
        task="masked_lm",
    )


def randomise_(model: torch.nn.Module, seed: int) -> None:
    """Weights of the size a trained model has: O(1) activations, LayerNorm gains near 1."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "layer_norm" in name or "LayerNorm" in name:
                base = 1.0 if name.endswith("weight") else 0.0
                param.copy_(base + 0.1 * torch.randn(param.shape, generator=generator))
            elif param.ndim == 2 and "embed" not in name:
                param.copy_(torch.randn(param.shape, generator=generator) / math.sqrt(param.shape[1]))
            elif "embed" in name:
                # Token/position embeddings of trained ESM-family models have a per-dimension std around 0.1;
                # with it the MLM logits spread like a trained model's (std ~2.5), not +-45.
                param.copy_(EMBEDDING_STD * torch.randn(param.shape, generator=generator))
            else:
                param.copy_(0.05 * torch.randn(param.shape, generator=generator))


def random_fm_model(
    theme: str,
    layers: int,
    embed_dim: int,
    ffn_embed_dim: int,
    heads: int,
    token_dropout: bool,
    emb_layer_norm_before: bool,
    seed: int,
):
    """The original `fm.BioBertModel` with random weights, and its fairseq training arguments."""
    alphabet = fm.Alphabet.from_architecture("roberta_large", theme)
    args = original_args(layers, embed_dim, ffn_embed_dim, heads, token_dropout)
    model_args = argparse.Namespace(
        **{k.replace("encoder_", ""): v for k, v in vars(args).items()},
        emb_layer_norm_before=emb_layer_norm_before,
    )
    model = fm.BioBertModel(model_args, alphabet)
    randomise_(model, seed)
    return model, args, alphabet


def write_original_checkpoint(
    path: Path,
    *,
    theme: str = "rna",
    layers: int = 2,
    embed_dim: int = 32,
    ffn_embed_dim: int = 64,
    heads: int = 4,
    token_dropout: bool = True,
    emb_layer_norm_before: bool = True,
    prefix: str = "sentence_encoder",
    with_contact_regression: bool = False,
    seed: int = 0,
) -> Path:
    """Save `{"args", "model"}` (or a bare state dict) the way the released .pth files are laid out."""
    model, args, _ = random_fm_model(
        theme, layers, embed_dim, ffn_embed_dim, heads, token_dropout, emb_layer_norm_before, seed
    )
    body, head = PREFIXES[prefix]
    state = {}
    for key, tensor in model.state_dict().items():
        if key.startswith("contact_head") and not with_contact_regression:
            continue
        state[(head if key.startswith(("lm_head", "contact_head")) else body) + key] = tensor
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state if prefix == "bare" else {"args": args, "model": state}, path)
    return path


SS_HEAD_NAME = "pc-resnet_1_sym_first:r-ss"


def randomise_resnet_head_(head: torch.nn.Module, seed: int, output_bias: float = -4.0) -> None:
    """Weights of the size a trained structure head has: He-scaled convolutions damped for a 32-block residual
    stream, BatchNorm gains near 1 and running statistics away from their initial 0 / 1, and an output bias that
    leaves a few percent of the pairs above the 0.34 threshold, like a trained head's sparse maps."""
    generator = torch.Generator().manual_seed(seed)

    def normal(shape, std):
        return std * torch.randn(shape, generator=generator)

    with torch.no_grad():
        for name, module in head.named_modules():
            if isinstance(module, torch.nn.Conv2d):
                fan_in = module.weight[0].numel()
                damping = 0.3 if ".resnet." in f".{name}." else 1.0
                module.weight.copy_(normal(module.weight.shape, damping * math.sqrt(2 / fan_in)))
                if module.bias is not None:
                    module.bias.copy_(normal(module.bias.shape, 0.1))
                if name == "proj.final":
                    module.bias.fill_(output_bias)
            elif isinstance(module, torch.nn.BatchNorm2d):
                module.weight.copy_(1 + normal(module.weight.shape, 0.1))
                module.bias.copy_(normal(module.bias.shape, 0.1))
                module.running_mean.copy_(normal(module.running_mean.shape, 0.5))
                module.running_var.copy_(
                    0.5 + torch.rand(module.running_var.shape, generator=generator) * 1.5
                )
                module.num_batches_tracked.fill_(1000)
            elif isinstance(module, torch.nn.Linear):
                module.weight.copy_(normal(module.weight.shape, 1 / math.sqrt(module.weight.shape[1])))
                module.bias.copy_(normal(module.bias.shape, 0.1))


@contextlib.contextmanager
def torch_hub_folder(folder: Path):
    """Point torch hub, where fm keeps and looks for RNA-FM_pretrained.pth, at `folder` for the duration."""
    with mock.patch.object(torch.hub, "_hub_dir", str(folder)):
        yield


def original_structure_model(structure_path: Path, backbone_path: Path):
    """fm's own secondary-structure model, by fm's own path: `fm.downstream.build_rnafm_resnet` finds the backbone
    in torch hub's cache (here a temporary one holding `backbone_path`), then loads the structure file into it."""
    import fm.downstream

    with tempfile.TemporaryDirectory() as hub:
        (Path(hub) / "checkpoints").mkdir()
        (Path(hub) / "checkpoints" / BACKBONE_FILE_NAME).symlink_to(backbone_path.resolve())
        with torch_hub_folder(Path(hub)), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model, alphabet = fm.downstream.build_rnafm_resnet(model_location=str(structure_path))
    return model.eval(), alphabet


def write_secondary_structure_checkpoint(
    path: Path,
    *,
    layers: int = 2,
    embed_dim: int = 40,
    ffn_embed_dim: int = 64,
    heads: int = 20,
    token_dropout: bool = True,
    seed: int = 0,
    backbone_path: Path | None = None,
    output_bias: float = -4.0,
) -> Path:
    """
    A structure file written as the original training wrote RNA-FM-ResNet_PDB-All.pth: fm.downstream's `Baseline`
    builds RNA-FM from `RNA-FM_pretrained.pth` in torch hub's cache, the ResNet head is trained on top of the frozen
    backbone (here: given random, realistically scaled weights instead) and `torch.save(model.state_dict())`.

    The backbone file is written with fm's classes to `backbone_path` (default: `<stem>-backbone/RNA-FM_pretrained.pth`
    beside the file, where the converter does not look), unless one exists there already. `output_bias` sets how
    many pairs pass the threshold: -4 leaves a few percent with a tiny backbone; a full-size one needs about -1.3.
    """
    import fm.downstream

    backbone_path = backbone_path or path.parent / f"{path.stem}-backbone" / BACKBONE_FILE_NAME
    if not backbone_path.exists():
        write_original_checkpoint(
            backbone_path,
            layers=layers,
            embed_dim=embed_dim,
            ffn_embed_dim=ffn_embed_dim,
            heads=heads,
            token_dropout=token_dropout,
            seed=seed,
        )
    with tempfile.TemporaryDirectory() as hub:
        (Path(hub) / "checkpoints").mkdir()
        (Path(hub) / "checkpoints" / BACKBONE_FILE_NAME).symlink_to(backbone_path.resolve())
        with torch_hub_folder(Path(hub)), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = fm.downstream.Baseline(
                backbone_name="rna-fm", pairwise_predictor_name=SS_HEAD_NAME, backbone_frozen=1
            )
    randomise_resnet_head_(model.downstream_modules[SS_HEAD_NAME], seed + 1, output_bias)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), path)
    return path


def load_with_fm(path: Path, theme: str = "rna"):
    """The original loader (the file name must contain RNA-FM so that it expects no regression file)."""
    assert "RNA-FM" in path.name
    model, alphabet = fm.pretrained.load_model_and_alphabet_local(str(path), theme=theme)
    return model.eval(), alphabet


def put_in_hub_cache(cache: Path, repo_id: str, filename: str, source: Path, revision: str = "main") -> None:
    """Lay out `source` as `hf_hub_download` leaves a download: a snapshot per commit and refs/<revision>."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / revision).write_text(commit)
    snapshot = repo / "snapshots" / commit / filename
    snapshot.parent.mkdir(parents=True, exist_ok=True)
    snapshot.write_bytes(source.read_bytes())
