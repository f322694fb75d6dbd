#!/usr/bin/env python
"""
Embedding throughput on a GPU, in one run: `rnafm_hf.embed` (what `rnafm-hf embed` runs; packed batches without
padding, through torch's variable-length attention kernel in half precision) in fp32 and bf16, against the
original `fm` code one sequence at a time and in the tutorial's chunks of 20 (fp32, as fm runs), on the same
full-size RNA-FM weights (random, in the original file format) and the RNAcentral sample of ../shared/data.

For each job: tokens per second (nucleotides plus `<cls>` and `<eos>`, as the model sees them; the best of
`--repeats` timed passes after one warm-up pass), peak GPU memory (torch's allocator, reset before the job), and
the largest difference of the per-nucleotide embeddings from fm's (fp32; bf16 is reported, not judged). Prints a
Markdown table; `--update-readme` writes it into docs/speed.md. Meant to finish within 5 minutes on one GPU.

    python benchmarks/bench_gpu.py [--fasta FILE] [--limit N] [--repeats N] [--update-readme]
    python benchmarks/bench_gpu.py --device cpu --size tiny --limit 4    # the same code paths, on a CPU
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_FASTA = ROOT.parent / "shared" / "data" / "format_rnacentral_active.100.sample-Max50.fasta"
SPEED_PAGE = ROOT / "docs" / "speed.md"
PAGE_START = "<!-- bench_gpu: start -->"
PAGE_END = "<!-- bench_gpu: end -->"
TUTORIAL_CHUNK = 20  # the seed tutorial's batch size
SIZES = {  # "tiny" exercises the script itself (tests, CPU)
    "rna-fm": {},
    "tiny": {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 64},
}


def prepare(workdir: Path, size: str) -> tuple[Path, Path]:
    """A random RNA-FM checkpoint in the original format and its converted folder."""
    from rnafm_hf import RnaFmConfig, RnaFmForMaskedLM
    from rnafm_hf.conversion import convert_checkpoint
    from rnafm_hf.original_checkpoint import to_original_checkpoint

    checkpoint, folder = workdir / "RNA-FM_random.pth", workdir / "rna-fm"
    torch.manual_seed(0)
    config = RnaFmConfig(**{**RnaFmConfig.rna_fm().to_diff_dict(), **SIZES[size]})
    torch.save(to_original_checkpoint(RnaFmForMaskedLM(config)), checkpoint)
    convert_checkpoint(checkpoint, folder, verify=False)
    return checkpoint, folder


def fm_embedder(checkpoint: Path, device: str, chunk: int) -> Callable[[list], dict]:
    """fm as its users run it: its loader and batch converter, `chunk` sequences at a time in file order."""
    import fm

    torch.serialization.add_safe_globals([argparse.Namespace])
    model, alphabet = fm.pretrained.load_model_and_alphabet_local(str(checkpoint), theme="rna")
    model = model.eval().to(device)
    converter = alphabet.get_batch_converter()
    last = len(model.layers)

    def run(records: list) -> dict:
        arrays = {}
        for first in range(0, len(records), chunk):
            part = records[first : first + chunk]
            _, _, batch = converter(part)
            with torch.no_grad():
                states = model(batch.to(device), repr_layers=[last])["representations"][last]
            for row, (name, sequence) in enumerate(part):
                arrays[name] = states[row, 1 : len(sequence) + 1].float().cpu().numpy()
        return arrays

    return run


def ours_embedder(folder: Path, device: str, dtype: str) -> Callable[[list], dict]:
    import rnafm_hf
    from rnafm_hf import RnaFmModel, RnaFmTokenizer
    from rnafm_hf.model_loading import load_model

    # As `embed` loads a folder (torch's GELU kernel), once for all passes.
    model = load_model(folder, RnaFmModel, hidden_act="gelu").eval().to(device)
    tokenizer = RnaFmTokenizer.from_pretrained(folder)

    def run(records: list) -> dict:
        return dict(
            rnafm_hf.embed(
                records, model, tokenizer=tokenizer, device=device, dtype=dtype, progress=False, log=None
            )
        )

    return run


def timed(run: Callable[[list], dict], records: list, device: str, repeats: int) -> tuple[float, int, dict]:
    """Best seconds of `repeats` passes after a warm-up, the peak memory of those passes, and the arrays."""
    arrays = run(records)  # warm-up: kernels, allocator
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        arrays = run(records)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - started)
    peak = torch.cuda.max_memory_allocated() if device.startswith("cuda") else 0
    return best, peak, arrays


def largest_difference(ours: dict, theirs: dict) -> float:
    return max(float(np.abs(ours[name] - theirs[name]).max()) for name in theirs)


def device_name(device: str) -> str:
    return torch.cuda.get_device_name(device) if device.startswith("cuda") else "CPU"


def run_all(
    fasta: Path, device: str, size: str, limit: int | None, repeats: int, workdir: Path
) -> list[dict]:
    from rnafm_hf.fasta import read_fasta

    records = read_fasta(fasta)[:limit]
    tokens = sum(len(sequence) + 2 for _, sequence in records)
    checkpoint, folder = prepare(workdir, size)
    jobs = {
        "fm, one sequence at a time (fp32)": fm_embedder(checkpoint, device, 1),
        f"fm, tutorial chunks of {TUTORIAL_CHUNK} (fp32)": fm_embedder(checkpoint, device, TUTORIAL_CHUNK),
        "rnafm-hf embed (fp32)": ours_embedder(folder, device, "float32"),
        "rnafm-hf embed (bf16)": ours_embedder(folder, device, "bfloat16"),
    }
    rows, reference = [], None
    for name, run in jobs.items():
        seconds, peak, arrays = timed(run, records, device, repeats)
        reference = reference or arrays
        rows.append(
            {
                "job": name,
                "tokens_per_second": tokens / seconds,
                "peak_mib": peak / 2**20,
                "max_abs_diff": largest_difference(arrays, reference),
            }
        )
        del run
        if device.startswith("cuda"):
            torch.cuda.empty_cache()
    baseline = rows[0]["tokens_per_second"]
    for row in rows:
        row["vs_fm_one_by_one"] = row["tokens_per_second"] / baseline
    return rows


def table(rows: list[dict], device: str, count: int) -> str:
    lines = [
        f"Embedding {count} RNAcentral sequences on {device_name(device)} (`benchmarks/bench_gpu.py`):",
        "",
        "| job | tokens/s | vs fm one by one | peak GPU memory (MiB) | max abs diff from fm |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for row in rows:
        lines.append(
            f"| {row['job']} | {row['tokens_per_second']:,.0f} | {row['vs_fm_one_by_one']:.2f}x | "
            f"{row['peak_mib']:,.0f} | {row['max_abs_diff']:.1e} |"
        )
    return "\n".join(lines)


def update_readme(text: str) -> None:
    readme = SPEED_PAGE.read_text()
    pattern = re.compile(re.escape(PAGE_START) + ".*?" + re.escape(PAGE_END), re.DOTALL)
    if not pattern.search(readme):
        raise SystemExit(f"docs/speed.md has no {PAGE_START} ... {PAGE_END} block to fill.")
    SPEED_PAGE.write_text(pattern.sub(lambda _: f"{PAGE_START}\n{text}\n{PAGE_END}", readme))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--fasta", type=Path, default=DEFAULT_FASTA)
    parser.add_argument("--limit", type=int, help="only the first N sequences")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--size", choices=sorted(SIZES), default="rna-fm")
    parser.add_argument("--workdir", type=Path, help="checkpoint and folder (default: a temporary folder)")
    parser.add_argument("--update-readme", action="store_true")
    options = parser.parse_args(argv)
    if options.device.startswith("cuda") and not torch.cuda.is_available():
        print(
            "No CUDA GPU here: run on a GPU machine, or pass --device cpu to exercise the script.",
            file=sys.stderr,
        )
        return 2
    with tempfile.TemporaryDirectory() as temporary:
        workdir = options.workdir or Path(temporary)
        workdir.mkdir(parents=True, exist_ok=True)
        rows = run_all(options.fasta, options.device, options.size, options.limit, options.repeats, workdir)
    from rnafm_hf.fasta import read_fasta

    text = table(rows, options.device, len(read_fasta(options.fasta)[: options.limit]))
    print(text)
    if options.update_readme:
        update_readme(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
