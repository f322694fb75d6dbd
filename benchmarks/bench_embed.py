#!/usr/bin/env python
"""
Embedding speed, memory and start-up, side by side in one run: rnafm-hf (Python API and CLI, fp32 and bf16)
against the original `fm` code in its two usual modes (one sequence at a time; the tutorial's chunks of 20 in file
order), on the same full-size RNA-FM weights (random, in the original file format) and the same FASTA input.

Every job runs in its own process, so its wall time includes start-up, imports, loading and writing, and its
peak RSS is that process's own; the jobs run `--repeats` times round robin and the median wall time counts. The script also measures the machine's fp32 and bf16 matmul peak before every job
and after the last (the speed of a shared machine drifts, so the median of these samples is the reference and
their range is shown), the effective GFLOP/s of each job over the model's FLOPs (the matrix products of every
layer over each sequence's own tokens, no padding), cold start (import + load) and tokenizer throughput, and checks
that the outputs agree. Prints Markdown tables; `--update-readme` writes them into docs/speed.md.

    python benchmarks/bench_embed.py [--fasta FILE] [--limit N] [--workdir DIR] [--update-readme]
    python benchmarks/bench_embed.py --report DIR/results.json [--update-readme]   # the tables of an earlier run
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from statistics import median

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_FASTA = ROOT.parent / "shared" / "data" / "format_rnacentral_active.100.sample-Max50.fasta"
SPEED_PAGE = ROOT / "docs" / "speed.md"
PAGE_START = "<!-- bench_embed: start -->"
PAGE_END = "<!-- bench_embed: end -->"
TUTORIAL_CHUNK = 20  # the seed tutorial's batch size
COLD_REPEATS = 3
# RNA-FM: 12 layers, width 640, feed-forward 5120.
LAYERS, HIDDEN, FEED_FORWARD = 12, 640, 5120
TARGETS = {"fp32_vs_fm": 1.3, "fp32_of_peak": 0.85, "bf16_vs_fm": 2.0, "cold_vs_fm": 1 / 3, "tokenizer": 1e6}


def model_flops(tokens: int) -> float:
    """Matrix-product FLOPs of one sequence of `tokens` tokens (`<cls>`, `<eos>` included) through RNA-FM."""
    projections = 2 * tokens * (4 * HIDDEN * HIDDEN + 2 * HIDDEN * FEED_FORWARD)
    attention = 2 * 2 * tokens * tokens * HIDDEN  # scores and weighted sum
    return LAYERS * (projections + attention)


def matmul_peak(dtype_name: str, seconds: float = 1.5) -> float:
    """Best GFLOP/s of torch.mm over a large square product and the model's own shapes (best of 3 runs each)."""
    import torch

    dtype = getattr(torch, dtype_name)
    shapes = [
        (4096, 4096, 4096),
        (1024, HIDDEN, FEED_FORWARD),
        (1024, FEED_FORWARD, HIDDEN),
        (4096, HIDDEN, HIDDEN),
    ]
    best = 0.0
    for m, k, n in shapes:
        a, b = torch.randn(m, k, dtype=dtype), torch.randn(k, n, dtype=dtype)
        out = torch.empty(m, n, dtype=dtype)
        torch.mm(a, b, out=out)
        for _ in range(3):
            count, started = 0, time.perf_counter()
            while time.perf_counter() - started < seconds / 3:
                torch.mm(a, b, out=out)
                count += 1
            best = max(best, 2 * m * k * n * count / (time.perf_counter() - started) / 1e9)
    return best


# ---- the jobs, each run in a process of its own --------------------------------------------------------------


def job_fm(checkpoint: str, fasta: str, output: str, chunk: str) -> None:
    """fm as its users run it: its loader and batch converter, `chunk` sequences at a time in file order, one
    .npy per sequence (the tutorial's layout)."""
    started = time.perf_counter()
    output_dir, chunk_size = Path(output), int(chunk)
    import fm
    import numpy as np
    import torch

    from rnafm_hf.fasta import read_fasta

    # fm calls torch.load without weights_only; torch >= 2.6 needs the file's Namespace allowed for it.
    torch.serialization.add_safe_globals([argparse.Namespace])
    model, alphabet = fm.pretrained.load_model_and_alphabet_local(checkpoint, theme="rna")
    model.eval()
    converter = alphabet.get_batch_converter()
    records = read_fasta(fasta)
    output_dir.mkdir(parents=True, exist_ok=True)
    ready = time.perf_counter()
    for first in range(0, len(records), chunk_size):
        part = records[first : first + chunk_size]
        _, _, batch = converter(part)
        with torch.no_grad():
            representations = model(batch, repr_layers=[LAYERS])["representations"][LAYERS]
        for row, (name, sequence) in enumerate(part):
            np.save(output_dir / f"{name}.npy", representations[row, 1 : len(sequence) + 1].numpy())
    print(json.dumps({"start": ready - started, "compute": time.perf_counter() - ready}))


def job_api(folder: str, fasta: str, dtype: str) -> None:
    """rnafm_hf.embed from Python: per-nucleotide arrays, consumed as they come (not written)."""
    started = time.perf_counter()
    import rnafm_hf

    count = 0
    for _, array in rnafm_hf.embed(fasta, folder, device="cpu", dtype=dtype, progress=False, log=None):
        count += array.shape[0]
    print(json.dumps({"nucleotides": count, "total": time.perf_counter() - started}))


def job_cold(which: str, target: str) -> None:
    """Import + load, as a user's first line does: ours from a converted folder, fm from the original file."""
    started = time.perf_counter()
    if which == "ours":
        from transformers import AutoModel

        import rnafm_hf  # noqa: F401 (registers the Auto classes)

        imported = time.perf_counter()
        AutoModel.from_pretrained(target)
    else:
        import fm
        import torch

        imported = time.perf_counter()
        torch.serialization.add_safe_globals([argparse.Namespace])
        fm.pretrained.load_model_and_alphabet_local(target, theme="rna")
    print(json.dumps({"import": imported - started, "load": time.perf_counter() - imported}))


JOBS = {"fm": job_fm, "api": job_api, "cold": job_cold}


def measured(arguments: list[str]) -> tuple[float, int, str]:
    """Wall time, peak RSS (bytes) and output of `arguments` run in a fresh process."""
    probe = (
        "import resource, subprocess, sys; "
        f"done = subprocess.run({arguments!r}, capture_output=True, text=True); "
        "sys.stderr.write(done.stderr); sys.stdout.write(done.stdout); "
        "print('PEAK', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024); "
        "sys.exit(done.returncode)"
    )
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode:
        raise RuntimeError(f"{arguments} failed:\n{done.stderr[-3000:]}")
    peak = int(re.search(r"PEAK (\d+)", done.stdout).group(1))
    return seconds, peak, done.stdout + done.stderr


def own_job(*arguments: object) -> list[str]:
    return [sys.executable, __file__, "--job", *map(str, arguments)]


def last_json(output: str) -> dict:
    return json.loads(next(line for line in reversed(output.splitlines()) if line.startswith("{")))


# ---- preparation and comparisons -------------------------------------------------------------------------------


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
            [sys.executable, "-m", "rnafm_hf", "convert", checkpoint, "-o", folder, "--no-verify"],
            check=True,
            capture_output=True,
        )
    records = read_fasta(fasta)[:limit]
    sample = workdir / "input.fasta"
    sample.write_text("".join(f">{name}\n{sequence}\n" for name, sequence in records))
    return checkpoint, folder, sample


def max_difference(ours: Path, theirs: Path) -> float:
    """Largest absolute difference between two folders of per-sequence arrays (ours an `embed` folder)."""
    import numpy as np

    from rnafm_hf import load_embeddings

    with load_embeddings(ours) as store:
        return max(float(np.abs(store[name] - np.load(theirs / f"{name}.npy")).max()) for name in store)


def differences_between_runs(ours: Path, reduced: Path) -> tuple[float, float]:
    """Max abs and mean relative (per-sequence Frobenius) difference of two `embed` folders."""
    import numpy as np

    from rnafm_hf import load_embeddings

    worst, relative = 0.0, []
    with load_embeddings(ours) as full, load_embeddings(reduced) as low:
        for name in full:
            difference = low[name] - full[name]
            worst = max(worst, float(np.abs(difference).max()))
            relative.append(float(np.linalg.norm(difference) / np.linalg.norm(full[name])))
    return worst, float(np.mean(relative))


def tokenizer_throughput(folder: Path, sequences: list[str]) -> tuple[float, float]:
    """Nucleotides per second of batch encoding the whole input: ours (fast tokenizer) and fm's batch converter."""
    import fm

    from rnafm_hf import RnaFmTokenizer

    tokenizer = RnaFmTokenizer.from_pretrained(folder)
    converter = fm.Alphabet.from_architecture("roberta_large", theme="rna").get_batch_converter()
    pairs = [(str(n), sequence) for n, sequence in enumerate(sequences)]
    nucleotides = sum(map(len, sequences))
    rates = []
    for encode in (lambda: tokenizer(sequences), lambda: converter(pairs)):
        best = float("inf")
        for _ in range(5):
            started = time.perf_counter()
            encode()
            best = min(best, time.perf_counter() - started)
        rates.append(nucleotides / best)
    return rates[0], rates[1]


def cold_start(which: str, target: Path) -> dict[str, float]:
    """Fastest of `COLD_REPEATS` fresh processes, by total."""
    runs = [last_json(measured(own_job("cold", which, target))[2]) for _ in range(COLD_REPEATS)]
    return min(runs, key=lambda run: run["import"] + run["load"])


# ---- report ----------------------------------------------------------------------------------------------------


def report(results: dict) -> str:
    """The Markdown tables and the targets, from the measured numbers."""
    nucleotides, flops = results["nucleotides"], results["flops"]
    peak32, peak16 = median(results["peaks_fp32"]), median(results["peaks_bf16"])
    lines = [
        f"{results['sequences']} sequences, {nucleotides} nt (median {results['median']}, longest "
        f"{results['longest']}) of `{results['fasta']}`; full-size RNA-FM with random weights; "
        f"torch {results['torch']}, {results['threads']} threads. Model FLOPs {flops / 1e12:.1f} TFLOP (matrix "
        f"products over each sequence's own tokens). Matmul peak, median of {len(results['peaks_fp32'])} samples "
        f"taken between the jobs: fp32 {peak32:.0f} GFLOP/s ({min(results['peaks_fp32']):.0f}-"
        f"{max(results['peaks_fp32']):.0f}), bf16 {peak16:.0f} GFLOP/s ({min(results['peaks_bf16']):.0f}-"
        f"{max(results['peaks_bf16']):.0f}).",
        "",
        (
            "Each job ran once."
            if results["repeats"] == 1
            else f"Each job ran {results['repeats']} times, round robin; wall time is the median, peak RSS the largest."
        ),
        "",
        "| implementation | wall (s) | nt/s | effective GFLOP/s | % of fp32 peak | peak RSS (MB) | vs faster fm |",
        "|---|---|---|---|---|---|---|",
    ]
    fastest_fm = min(job["wall"] for name, job in results["jobs"].items() if name.startswith("fm"))
    for name, job in results["jobs"].items():
        rate = flops / job["wall"] / 1e9
        lines.append(
            f"| {name} | {job['wall']:.1f} | {nucleotides / job['wall']:.0f} | {rate:.0f} | "
            f"{100 * rate / peak32:.0f}% | {job['peak'] / 1e6:.0f} | {fastest_fm / job['wall']:.2f}x |"
        )
    ours, fm = results["cold"]["ours"], results["cold"]["fm"]
    lines += [
        "",
        "| cold start (best of 3 processes) | import (s) | load (s) | total (s) |",
        "|---|---|---|---|",
        f"| rnafm-hf: `import rnafm_hf` + `AutoModel.from_pretrained(folder)` | {ours['import']:.2f} | "
        f"{ours['load']:.2f} | {ours['import'] + ours['load']:.2f} |",
        f"| fm: `import fm` + `load_model_and_alphabet_local(file)` | {fm['import']:.2f} | {fm['load']:.2f} | "
        f"{fm['import'] + fm['load']:.2f} |",
        "",
        f"Tokenizer, batch encoding of the whole input: rnafm-hf {results['tokenizer_ours'] / 1e6:.2f} M nt/s, fm's "
        f"batch converter {results['tokenizer_fm'] / 1e6:.2f} M nt/s.",
        "",
        f"Agreement: rnafm-hf fp32 vs fm one by one, max abs difference {results['diff_fm']:.1e} over all "
        f"sequences; bf16 vs fp32 max abs difference {results['diff_bf16']:.2f}, mean relative (Frobenius) "
        f"difference {results['relative_bf16']:.2e}.",
    ]
    return "\n".join(lines)


def targets(results: dict) -> str:
    """Each target of the performance issue with the measured ratio."""
    jobs, flops, peak32 = results["jobs"], results["flops"], median(results["peaks_fp32"])
    fastest_fm = min(job["wall"] for name, job in jobs.items() if name.startswith("fm"))
    cli, bf16 = jobs["rnafm-hf embed (CLI), fp32"], jobs["rnafm-hf embed (CLI), bf16"]
    least_fm_rss = min(jobs[name]["peak"] for name in jobs if name.startswith("fm"))
    cold = {name: run["import"] + run["load"] for name, run in results["cold"].items()}
    rows = [
        ("fp32 end to end vs the faster fm mode", fastest_fm / cli["wall"], TARGETS["fp32_vs_fm"], "x"),
        (
            "fp32 end to end, share of the fp32 matmul peak",
            flops / cli["wall"] / 1e9 / peak32,
            TARGETS["fp32_of_peak"],
            "%",
        ),
        ("bf16 end to end vs the faster fm mode", fastest_fm / bf16["wall"], TARGETS["bf16_vs_fm"], "x"),
        ("peak RSS, CLI fp32 / the leaner fm mode", cli["peak"] / least_fm_rss, 1.0, "<"),
        ("cold start, import + load / fm's", cold["ours"] / cold["fm"], TARGETS["cold_vs_fm"], "<"),
        (
            "cold start, load only / fm's",
            results["cold"]["ours"]["load"] / results["cold"]["fm"]["load"],
            TARGETS["cold_vs_fm"],
            "<",
        ),
        ("tokenizer M nt/s", results["tokenizer_ours"] / 1e6, TARGETS["tokenizer"] / 1e6, "M"),
    ]
    lines = ["| target | measured | goal | met |", "|---|---|---|---|"]
    for name, value, goal, kind in rows:
        met = value <= goal if kind == "<" else value >= goal
        shown = f"{100 * value:.0f}%" if kind == "%" else f"{value:.2f}"
        wanted = (
            f">= {100 * goal:.0f}%"
            if kind == "%"
            else (f"<= {goal:.2f}" if kind == "<" else f">= {goal:.2f}")
        )
        lines.append(f"| {name} | {shown} | {wanted} | {'yes' if met else 'no'} |")
    return "\n".join(lines)


def update_readme(text: str) -> None:
    readme = SPEED_PAGE.read_text(encoding="utf-8")
    start, end = readme.index(PAGE_START) + len(PAGE_START), readme.index(PAGE_END)
    SPEED_PAGE.write_text(readme[:start] + "\n" + text + "\n" + readme[end:], encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--fasta", type=Path, default=DEFAULT_FASTA)
    parser.add_argument("--limit", type=int, help="only the first N sequences (a quick check)")
    parser.add_argument("--workdir", type=Path, help="checkpoints and outputs (default: a temporary folder)")
    parser.add_argument(
        "--repeats", type=int, default=2, help="rounds of all jobs (default 2); medians count"
    )
    parser.add_argument(
        "--skip-chunks",
        action="store_true",
        help=f"leave out fm's chunks of {TUTORIAL_CHUNK} (the slower fm mode, about 20 minutes a round here)",
    )
    parser.add_argument("--update-readme", action="store_true", help="write the tables into docs/speed.md")
    parser.add_argument(
        "--report", type=Path, help="print (and with --update-readme write) an earlier run's tables"
    )
    parser.add_argument("--job", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.job:
        name, *arguments = args.job
        JOBS[name](*arguments)
        return
    if args.report:
        publish(json.loads(args.report.read_text()), args.report, args.update_readme)
        return

    import torch

    from rnafm_hf.fasta import read_fasta

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench-embed-"))
    workdir.mkdir(parents=True, exist_ok=True)
    checkpoint, folder, sample = prepare(workdir, args.fasta, args.limit)
    sequences = [sequence for _, sequence in read_fasta(sample)]
    lengths = sorted(map(len, sequences))
    results: dict = {
        "fasta": args.fasta.name,
        "sequences": len(lengths),
        "nucleotides": sum(lengths),
        "median": lengths[len(lengths) // 2],
        "longest": lengths[-1],
        "flops": sum(model_flops(length + 2) for length in lengths),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "jobs": {},
    }
    print(f"Working in {workdir}", file=sys.stderr)
    results["peaks_fp32"], results["peaks_bf16"] = [], []

    def sample_peaks() -> None:
        results["peaks_fp32"].append(matmul_peak("float32"))
        results["peaks_bf16"].append(matmul_peak("bfloat16"))

    def embed_cli(output: str, *options: str) -> list[str]:
        command = [
            sys.executable,
            "-m",
            "rnafm_hf",
            "embed",
            sample,
            "--model",
            folder,
            "-o",
            workdir / output,
        ]
        return [*map(str, command), "--overwrite", "--device", "cpu", *options]

    jobs = {
        "rnafm-hf embed (CLI), fp32": embed_cli("ours"),
        "rnafm_hf.embed (API), fp32": own_job("api", folder, sample, "float32"),
        "rnafm-hf embed (CLI), bf16": embed_cli("ours-bf16", "--dtype", "bfloat16"),
        "fm one by one": own_job("fm", checkpoint, sample, workdir / "fm-1", 1),
        f"fm chunks of {TUTORIAL_CHUNK}": own_job(
            "fm", checkpoint, sample, workdir / "fm-20", TUTORIAL_CHUNK
        ),
    }
    if args.skip_chunks:
        del jobs[f"fm chunks of {TUTORIAL_CHUNK}"]
    runs: dict[str, list[tuple[float, int]]] = {name: [] for name in jobs}
    for round_number in range(args.repeats):  # round robin, so that a slow spell of the machine hits all
        for name, command in jobs.items():
            sample_peaks()
            print(f"Running {name} (round {round_number + 1}) ...", file=sys.stderr)
            runs[name].append(measured(command)[:2])
            print(f"  {runs[name][-1][0]:.1f} s, peak RSS {runs[name][-1][1] / 1e6:.0f} MB", file=sys.stderr)
    sample_peaks()
    results["repeats"] = args.repeats
    for name, measurements in runs.items():
        walls, peaks = [wall for wall, _ in measurements], [peak for _, peak in measurements]
        results["jobs"][name] = {"wall": median(walls), "peak": max(peaks), "walls": walls, "peaks": peaks}
    results["cold"] = {"ours": cold_start("ours", folder), "fm": cold_start("fm", checkpoint)}
    results["tokenizer_ours"], results["tokenizer_fm"] = tokenizer_throughput(folder, sequences)
    results["diff_fm"] = max_difference(workdir / "ours", workdir / "fm-1")
    results["diff_bf16"], results["relative_bf16"] = differences_between_runs(
        workdir / "ours", workdir / "ours-bf16"
    )
    (workdir / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    publish(results, workdir / "results.json", args.update_readme)


def publish(results: dict, saved: Path, write_readme: bool) -> None:
    text = report(results) + "\n\n" + targets(results)
    print(text)
    print(f"\nReproduce: python benchmarks/bench_embed.py (these results: {saved})")
    if write_readme:
        update_readme(text)


if __name__ == "__main__":
    main()
