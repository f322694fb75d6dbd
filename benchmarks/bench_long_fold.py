#!/usr/bin/env python
"""
Folding RNAs longer than the model with `rnafm-hf fold --long window`: wall time and peak memory (RSS) per
length, with the full-size RNA-FM-ResNet (12 layers of width 640, the 32-block pair head; random weights, so the
structures mean nothing, the cost is the real one). Each length runs in a process of its own; the sequence is
random (a fixed seed). The pair head runs in tiles (`rnafm_hf.long_folding`), so its memory grows with the tile,
not with L^2; only the (L, L) probability map itself (4 L^2 bytes) grows with L.

    python benchmarks/bench_long_fold.py [--lengths 1000 2500 5000] [--output results.json]
"""

from __future__ import annotations

import argparse
import json
import random
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROBE = """
import sys
from rnafm_hf.cli import main
status = main(sys.argv[1:])
# VmHWM, this process image's own peak (ru_maxrss would keep the forking parent's across exec), in kB.
print("PEAK", 1024 * int(next(line.split()[1] for line in open("/proc/self/status") if line.startswith("VmHWM"))))
sys.exit(status)
"""


def structure_folder(workdir: Path) -> Path:
    """A full-size RNA-FM-ResNet with random weights, saved as a converted folder is."""
    import torch

    from rnafm_hf import RnaFmConfig, RnaFmForSecondaryStructure, RnaFmTokenizer

    folder = workdir / "rna-fm-ss"
    torch.manual_seed(0)
    RnaFmForSecondaryStructure(RnaFmConfig()).save_pretrained(folder)
    RnaFmTokenizer().save_pretrained(folder)
    return folder


def fold_once(folder: Path, length: int, workdir: Path) -> dict:
    rng = random.Random(length)
    fasta = workdir / f"random-{length}.fasta"
    fasta.write_text(f">random_{length}\n{''.join(rng.choice('ACGU') for _ in range(length))}\n")
    command = ["fold", str(fasta), "--model", str(folder), "-o", str(workdir / f"out-{length}")]
    command += ["--long", "window", "--formats", "npy", "--threshold", "0.99", "-q", "--overwrite"]
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", PROBE, *command], capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode:
        raise SystemExit(f"fold of {length} nt failed:\n{done.stderr[-3000:]}")
    peak = int(re.search(r"PEAK (\d+)", done.stdout).group(1))
    return {"length": length, "seconds": round(seconds, 1), "peak_rss_mb": round(peak / 2**20)}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--lengths", type=int, nargs="+", default=[1000, 2500, 5000])
    parser.add_argument("--output", type=Path, help="also write the rows as JSON")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as temporary:
        workdir = Path(temporary)
        folder = structure_folder(workdir)
        rows = []
        for length in args.lengths:
            rows.append(fold_once(folder, length, workdir))
            print(json.dumps(rows[-1]), flush=True)
    import torch

    from rnafm_hf.long_folding import DEFAULT_TILE

    print(
        f"\nfold --long window, full-size RNA-FM-ResNet, tiles of {DEFAULT_TILE}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads"
    )
    print("| length (nt) | wall (s) | peak RSS (MB) | (L, L) map (MB) |\n|---|---|---|---|")
    for row in rows:
        print(
            f"| {row['length']} | {row['seconds']} | {row['peak_rss_mb']} | {4 * row['length'] ** 2 / 2**20:.0f} |"
        )
    if args.output:
        args.output.write_text(json.dumps({"tile": DEFAULT_TILE, "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
