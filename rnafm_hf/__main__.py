"""`python -m rnafm_hf ...` is the `rnafm-hf` command (for `accelerate launch -m rnafm_hf embed ...`)."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
