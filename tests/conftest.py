import argparse
import os
import sys
import tempfile
from pathlib import Path

# MKL's reproducible mode, set before torch loads MKL: by default, on some CPUs (AMD EPYC here), MKL's sgemm rounds
# according to where the buffers sit in memory, so the same weights loaded from a file and freshly trained give
# outputs ~1e-7 apart, and parity with fm drifts by as much. Tests pin it; users get MKL's default.
os.environ.setdefault("MKL_CBWR", "AUTO")

import pytest  # noqa: E402
import torch  # noqa: E402
from original_checkpoints import write_original_checkpoint

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Released models are converted into this cache; the tests' own, never the user's.
os.environ["RNAFM_HF_CACHE"] = tempfile.mkdtemp(prefix="rnafm-hf-cache-")
sys.path.insert(0, str(Path(__file__).parent))
# The original loader calls torch.load without weights_only; torch >= 2.6 needs Namespace allow-listed for it.
torch.serialization.add_safe_globals([argparse.Namespace])
# One thread: with torch 2.13 on a 2-thread CPU, the first pass of a new batch shape was seen to come out ~2e-4 off
# in about one process in eight (fm and ours alike), which would make the 1e-5 parity checks flaky.
torch.set_num_threads(1)

# transformers' vendored test mixins run through tests/test_transformers_suite.py, not on their own.
collect_ignore = ["transformers_suite"]

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
TINY = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 64}
# With a small structure head too, so that folding is fast.
TINY_STRUCTURE = {**TINY, "ss_head_reduction": 8, "ss_head_channels": 8, "ss_head_blocks": 4}


def tiny_config(**overrides):
    """A 2-layer, 32-wide RNA-FM configuration for fast tests."""
    from rnafm_hf import RnaFmConfig

    return RnaFmConfig(**{**TINY, **overrides})


def read_fasta(path: Path) -> list[tuple[str, str]]:
    records, name, lines = [], None, []
    for line in path.read_text().splitlines():
        if line.startswith(">"):
            if name is not None:
                records.append((name, "".join(lines)))
            name, lines = line[1:].split()[0], []
        else:
            lines.append(line.strip())
    if name is not None:
        records.append((name, "".join(lines)))
    return records


@pytest.fixture(scope="session")
def example_sequences() -> list[tuple[str, str]]:
    path = DATA / "example.fasta"
    if not path.exists():
        pytest.skip(f"{path} is absent: the shared data folder (../shared/data) is needed for this test")
    return read_fasta(path)


@pytest.fixture(scope="session")
def saved_folder(tmp_path_factory) -> Path:
    """A tiny RNA-FM folder written by save_pretrained from converted original weights (encoder, MLM head and
    contact regression), as users will have."""
    from rnafm_hf import RnaFmTokenizer, load_original_checkpoint

    folder = tmp_path_factory.mktemp("rna-fm")
    checkpoint = write_original_checkpoint(folder.parent / "RNA-FM_tiny.pth", with_contact_regression=True)
    load_original_checkpoint(checkpoint).save_pretrained(folder)
    RnaFmTokenizer().save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def full_rna_fm_checkpoint(tmp_path_factory) -> Path:
    """A full-size RNA-FM file (12 x 640, 99.5 M parameters) in the released layout, random weights."""
    return write_original_checkpoint(
        tmp_path_factory.mktemp("full") / "RNA-FM_pretrained.pth",
        layers=12,
        embed_dim=640,
        ffn_embed_dim=5120,
        heads=20,
        seed=11,
    )


@pytest.fixture(scope="session")
def full_mrna_fm_checkpoint(tmp_path_factory) -> Path:
    """A full-size mRNA-FM file (12 x 1280, codon vocabulary, no embedding LayerNorm), `encoder.encoder.` keys."""
    return write_original_checkpoint(
        tmp_path_factory.mktemp("full") / "file_mRNA-FM_pretrained.pth",
        theme="rna-3mer",
        layers=12,
        embed_dim=1280,
        ffn_embed_dim=5120,
        heads=20,
        emb_layer_norm_before=False,
        prefix="encoder_encoder",
        seed=12,
    )


@pytest.fixture(scope="session")
def structure_folder(tmp_path_factory) -> Path:
    """A tiny secondary-structure folder written by save_pretrained (random weights, a small head)."""
    from rnafm_hf import RnaFmConfig, RnaFmForSecondaryStructure, RnaFmTokenizer

    folder = tmp_path_factory.mktemp("tiny-ss")
    torch.manual_seed(0)
    RnaFmForSecondaryStructure(RnaFmConfig(**TINY_STRUCTURE)).save_pretrained(folder)
    RnaFmTokenizer().save_pretrained(folder)
    return folder
