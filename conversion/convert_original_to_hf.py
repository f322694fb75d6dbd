#!/usr/bin/env python
"""
Convert an original RNA-FM / mRNA-FM / secondary-structure .pth file into a transformers folder.

The same program as `rnafm-hf convert` (this script calls it); run either with `--help` for the options:

    python conversion/convert_original_to_hf.py RNA-FM_pretrained.pth --output rna-fm
    python conversion/convert_original_to_hf.py hf://cuhkaih/rnafm/RNA-FM_pretrained.pth --push-to-hub me/rna-fm
"""

import sys

from rnafm_hf.cli import main

if __name__ == "__main__":
    sys.exit(main(["convert", *sys.argv[1:]]))
