#!/usr/bin/env python
"""
Write a small RNA-FM checkpoint with RANDOM weights in the original file format (`{"args", "model"}`, fairseq key
names), for trying the conversion and the rest of the package offline. Its outputs mean nothing.

    python conversion/make_random_checkpoint.py RNA-FM_random.pth [--layers 2] [--mrna]
"""

import argparse

import torch

from rnafm_hf import RnaFmConfig, RnaFmForMaskedLM
from rnafm_hf.original_checkpoint import to_original_checkpoint


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("path", help="where to write the .pth file")
    parser.add_argument(
        "--layers", type=int, default=2, help="number of layers (the released models have 12)"
    )
    parser.add_argument("--mrna", action="store_true", help="mRNA-FM layout (codon vocabulary, width 1280)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    config = (RnaFmConfig.mrna_fm if args.mrna else RnaFmConfig.rna_fm)(num_hidden_layers=args.layers)
    torch.save(to_original_checkpoint(RnaFmForMaskedLM(config)), args.path)
    print(
        f"Wrote {args.path}: {'mRNA-FM' if args.mrna else 'RNA-FM'} layout, {args.layers} layers, random weights"
    )


if __name__ == "__main__":
    main()
