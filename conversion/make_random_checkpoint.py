#!/usr/bin/env python
"""Write a small RNA-FM checkpoint with RANDOM weights in the original file format: `python -m rnafm_hf.stand_in`,
runnable from this folder of a clone (see that module for the options)."""

from rnafm_hf.stand_in import main

if __name__ == "__main__":
    main()
