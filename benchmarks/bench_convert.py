#!/usr/bin/env python
"""
Time and peak memory of `rnafm-hf convert` on full-size checkpoints with random weights in the original format.

Each conversion runs in its own process; wall time includes start-up, peak RSS is the child's maximum resident
set. Prints a Markdown table:

    python benchmarks/bench_convert.py [--kinds rna-fm,mrna-fm] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from rnafm_hf import RnaFmConfig, RnaFmForMaskedLM
from rnafm_hf.original_checkpoint import to_original_checkpoint

CONFIGS = {"rna-fm": RnaFmConfig.rna_fm, "mrna-fm": RnaFmConfig.mrna_fm}


def measure(kind: str, workdir: Path, verify: bool) -> dict[str, float]:
    checkpoint = workdir / f"{kind}.pth"
    if not checkpoint.exists():
        torch.manual_seed(0)
        torch.save(to_original_checkpoint(RnaFmForMaskedLM(CONFIGS[kind]())), checkpoint)
    output = workdir / f"{kind}-{'verified' if verify else 'plain'}"
    command = [
        sys.executable,
        "-m",
        "rnafm_hf.cli",
        "convert",
        str(checkpoint),
        "-o",
        str(output),
        "--overwrite",
    ]
    command += [] if verify else ["--no-verify"]
    # A fresh interpreter per measurement, so RUSAGE_CHILDREN holds this conversion's peak only.
    probe = f"import resource, subprocess; subprocess.run({command!r}, check=True, capture_output=True); " + (
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024)"
    )
    started = time.perf_counter()
    peak = int(
        subprocess.run([sys.executable, "-c", probe], check=True, capture_output=True, text=True).stdout
    )
    seconds = time.perf_counter() - started
    folder = sum(f.stat().st_size for f in output.iterdir())
    return {"file": checkpoint.stat().st_size, "seconds": seconds, "peak": peak, "folder": folder}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--kinds", default="rna-fm,mrna-fm")
    parser.add_argument(
        "--workdir", type=Path, help="where checkpoints and folders go (default: a temp folder)"
    )
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench-convert-"))
    workdir.mkdir(parents=True, exist_ok=True)
    print(
        f"CPU threads {torch.get_num_threads()}, os.cpu_count() {os.cpu_count()}, torch {torch.__version__}\n"
    )
    print("| model | verify | file (MB) | wall (s) | peak RSS (MB) | peak / file | folder (MB) |")
    print("|---|---|---|---|---|---|---|")
    for kind in args.kinds.split(","):
        for verify in (False, True):
            m = measure(kind, workdir, verify)
            print(
                f"| {kind} | {'yes' if verify else 'no'} | {m['file'] / 1e6:.0f} | {m['seconds']:.1f} | "
                f"{m['peak'] / 1e6:.0f} | {m['peak'] / m['file']:.2f} | {m['folder'] / 1e6:.0f} |"
            )


if __name__ == "__main__":
    main()
