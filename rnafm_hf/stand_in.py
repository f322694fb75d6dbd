"""
Write a small RNA-FM checkpoint with RANDOM weights in the original file format (`{"args", "model"}`, fairseq key
names; with --secondary-structure the bare state dict of RNA-FM-ResNet_PDB-All.pth, the ResNet head included), for
trying the conversion and the rest of the package offline. Its outputs mean nothing.

    python -m rnafm_hf.stand_in RNA-FM_random.pth [--layers 2] [--mrna | --secondary-structure]
        [--hidden-size 640 --heads 20 --intermediate-size 5120]

(`conversion/make_random_checkpoint.py` in a clone of the repository runs the same program.)

A structure head sits on an RNA-FM backbone, as the real one was trained on RNA-FM_pretrained.pth: with
`--secondary-structure --backbone RNA-FM_random.pth` the new head is put on that file's weights (pass the same file
to `rnafm-hf convert --backbone`); without it, on a new random backbone.

The defaults are the released widths with 2 layers. Smaller widths give a small randomly initialised RNA-FM, e.g. to
try fine-tuning from scratch in minutes on a CPU.
"""

import argparse

import torch

from .configuration_rnafm import RnaFmConfig
from .model_card import RANDOM_WEIGHTS_MARKER
from .modeling_rnafm import RnaFmForMaskedLM, RnaFmForSecondaryStructure
from .original_checkpoint import (
    load_original_checkpoint,
    to_original_checkpoint,
    to_original_structure_checkpoint,
)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("path", help="where to write the .pth file")
    parser.add_argument(
        "--layers", type=int, default=2, help="number of layers (the released models have 12)"
    )
    kind = parser.add_mutually_exclusive_group()
    kind.add_argument("--mrna", action="store_true", help="mRNA-FM layout (codon vocabulary, width 1280)")
    kind.add_argument(
        "--secondary-structure",
        action="store_true",
        help="secondary-structure layout (RNA-FM backbone + ResNet head, as RNA-FM-ResNet_PDB-All.pth)",
    )
    parser.add_argument("--hidden-size", type=int, default=None, help="width (default: the released model's)")
    parser.add_argument("--heads", type=int, default=None, help="attention heads (default: 20)")
    parser.add_argument(
        "--intermediate-size", type=int, default=None, help="feed-forward width (default: 5120)"
    )
    parser.add_argument(
        "--backbone", help="with --secondary-structure: an RNA-FM .pth file whose weights the head sits on"
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.backbone and not args.secondary_structure:
        parser.error("--backbone is for --secondary-structure")
    torch.manual_seed(args.seed)
    sizes = {
        "hidden_size": args.hidden_size,
        "num_attention_heads": args.heads,
        "intermediate_size": args.intermediate_size,
    }
    config = (RnaFmConfig.mrna_fm if args.mrna else RnaFmConfig.rna_fm)(
        num_hidden_layers=args.layers, **{name: value for name, value in sizes.items() if value is not None}
    )
    model = load_original_checkpoint(args.backbone) if args.backbone else RnaFmForMaskedLM(config)
    config = model.config
    if args.secondary_structure:
        head = RnaFmForSecondaryStructure(config).ss_head
        torch.save(to_original_structure_checkpoint(model, head), args.path)
        layout = "RNA-FM-ResNet (secondary structure)"
    else:
        checkpoint = to_original_checkpoint(model)
        # Marks the file as a stand-in: the model card of a folder converted from it says so.
        setattr(checkpoint["args"], RANDOM_WEIGHTS_MARKER, "rnafm_hf.stand_in (random weights)")
        torch.save(checkpoint, args.path)
        layout = "mRNA-FM" if args.mrna else "RNA-FM"
    print(
        f"Wrote {args.path}: {layout} layout, {config.num_hidden_layers} layers of width {config.hidden_size}, "
        "random weights" + (f" (the backbone's from {args.backbone})" if args.backbone else "")
    )


if __name__ == "__main__":
    main()
