#!/usr/bin/env python
"""
Embed a FASTA file end to end with `rnafm-hf embed` and with the original `fm` code the seed's way (the tutorial's
fixed chunks of 20 sequences in file order), on the same full-size RNA-FM weights (random), and compare.

Each side runs in its own process (start-up, model loading and writing one .npy per sequence included); peak RSS
is that process's maximum resident set. Prints a Markdown table and the ratio:

    python benchmarks/bench_embed.py [--fasta ../shared/data/format_rnacentral_active.100.sample-Max50.fasta]
                                     [--limit N] [--workdir DIR] [--batch-tokens N]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DEFAULT_FASTA = (
    Path(__file__).resolve().parents[2]
    / "shared"
    / "data"
    / "format_rnacentral_active.100.sample-Max50.fasta"
)
CHUNK = 20  # the seed tutorial's batch size


def prepare(workdir: Path, fasta: Path, limit: int | None) -> tuple[Path, Path, Path]:
    """A full-size random RNA-FM checkpoint in the original format, its converted folder, and the input."""
    import torch

    from rnafm_hf import RnaFmConfig, RnaFmForMaskedLM
    from rnafm_hf.fasta import read_fasta
    from rnafm_hf.original_checkpoint import to_original_checkpoint

    checkpoint = workdir / "RNA-FM_random.pth"
    if not checkpoint.exists():
        torch.manual_seed(0)
        torch.save(to_original_checkpoint(RnaFmForMaskedLM(RnaFmConfig.rna_fm())), checkpoint)
    folder = workdir / "rna-fm"
    if not folder.exists():
        subprocess.run(
            [sys.executable, "-m", "rnafm_hf", "convert", str(checkpoint), "-o", str(folder), "--no-verify"],
            check=True,
            capture_output=True,
        )
    records = read_fasta(fasta)[:limit]
    sample = workdir / "input.fasta"
    sample.write_text("".join(f">{name}\n{sequence}\n" for name, sequence in records))
    return checkpoint, folder, sample


def run_fm(checkpoint: Path, fasta: Path, output: Path) -> None:
    """The seed's way: fm's loader and batch converter, chunks of 20 in file order, one .npy per sequence."""
    import fm
    import numpy as np
    import torch

    from rnafm_hf.fasta import read_fasta

    # fm calls torch.load without weights_only; torch >= 2.6 needs the file's Namespace allowed for it.
    torch.serialization.add_safe_globals([argparse.Namespace])
    model, alphabet = fm.pretrained.load_model_and_alphabet_local(str(checkpoint), theme="rna")
    model.eval()
    converter = alphabet.get_batch_converter()
    records = read_fasta(fasta)
    output.mkdir(parents=True, exist_ok=True)
    slots = tokens = 0
    for first in range(0, len(records), CHUNK):
        chunk = records[first : first + CHUNK]
        _, _, batch = converter(chunk)
        with torch.no_grad():
            representations = model(batch, repr_layers=[12])["representations"][12]
        slots += batch.numel()
        tokens += sum(len(sequence) + 2 for _, sequence in chunk)
        for row, (name, sequence) in enumerate(chunk):
            np.save(output / f"{name}.npy", representations[row, 1 : len(sequence) + 1].numpy())
    print(json.dumps({"padding": 1 - tokens / slots}))


def measured(command: list[str]) -> tuple[float, int, str]:
    """Wall time, peak RSS (bytes) and stderr of `command` run in a fresh process."""
    probe = (
        "import resource, subprocess, sys; "
        f"done = subprocess.run({command!r}, capture_output=True, text=True); "
        "sys.stderr.write(done.stderr); sys.stdout.write(done.stdout); "
        "print('PEAK', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024); "
        "sys.exit(done.returncode)"
    )
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode:
        raise RuntimeError(f"{command} failed:\n{done.stderr[-3000:]}")
    peak = int(re.search(r"PEAK (\d+)", done.stdout).group(1))
    return seconds, peak, done.stdout + done.stderr


def max_difference(ours: Path, theirs: Path) -> float:
    import numpy as np

    from rnafm_hf import load_embeddings

    store = load_embeddings(ours)
    return max(
        float(np.abs(store[name] - np.load(theirs / f"{name}.npy")).max()) for name in list(store)[:50]
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--fasta", type=Path, default=DEFAULT_FASTA)
    parser.add_argument("--limit", type=int, help="only the first N sequences (a quick check)")
    parser.add_argument(
        "--workdir", type=Path, help="where checkpoints and outputs go (default: a temp folder)"
    )
    parser.add_argument("--batch-tokens", type=int, help="passed to rnafm-hf embed")
    parser.add_argument(
        "--run-fm", nargs=3, metavar=("CHECKPOINT", "FASTA", "OUTPUT"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.run_fm:
        run_fm(*map(Path, args.run_fm))
        return

    import torch

    from rnafm_hf.fasta import read_fasta

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench-embed-"))
    workdir.mkdir(parents=True, exist_ok=True)
    checkpoint, folder, sample = prepare(workdir, args.fasta, args.limit)
    lengths = [len(sequence) for _, sequence in read_fasta(sample)]
    nucleotides = sum(lengths)
    print(
        f"{len(lengths)} sequences, {nucleotides} nt (median {sorted(lengths)[len(lengths) // 2]}, max "
        f"{max(lengths)}) from {args.fasta.name}; full-size RNA-FM, random weights, fp32; torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, {os.cpu_count()} CPUs\n"
    )

    ours_output = workdir / "ours"
    command = [
        sys.executable,
        "-m",
        "rnafm_hf",
        "embed",
        str(sample),
        "--model",
        str(folder),
        "-o",
        str(ours_output),
    ]
    command += ["--overwrite", "--device", "cpu"]
    command += ["--batch-tokens", str(args.batch_tokens)] if args.batch_tokens else []
    ours_seconds, ours_peak, ours_log = measured(command)
    ours_padding = float(re.search(r"padding ([\d.]+)% of the computed tokens", ours_log).group(1)) / 100

    fm_output = workdir / "fm"
    fm_seconds, fm_peak, fm_log = measured(
        [sys.executable, __file__, "--run-fm", str(checkpoint), str(sample), str(fm_output)]
    )
    fm_padding = json.loads(fm_log.splitlines()[0])["padding"]

    print("| implementation | wall (s) | nt/s | padding | peak RSS (MB) |")
    print("|---|---|---|---|---|")
    for name, seconds, padding, peak in (
        ("rnafm-hf embed (CLI)", ours_seconds, ours_padding, ours_peak),
        (f"fm, chunks of {CHUNK} in file order", fm_seconds, fm_padding, fm_peak),
    ):
        print(
            f"| {name} | {seconds:.1f} | {nucleotides / seconds:.0f} | {100 * padding:.1f}% | {peak / 1e6:.0f} |"
        )
    print(f"\nSpeed-up (fm wall / ours): {fm_seconds / ours_seconds:.2f}x")
    print(
        f"Max abs difference of the embeddings (first 50 sequences): {max_difference(ours_output, fm_output):.2e}"
    )


if __name__ == "__main__":
    main()
