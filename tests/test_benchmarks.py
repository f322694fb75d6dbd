"""benchmarks/bench_gpu.py runs its GPU jobs on a CPU too: the same code paths, with a tiny model."""

import importlib.util
from pathlib import Path

BENCH_GPU = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_gpu.py"


def test_gpu_benchmark_runs_its_jobs_and_checks_them_against_fm(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("bench_gpu", BENCH_GPU)
    bench_gpu = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench_gpu)
    argv = ["--device", "cpu", "--size", "tiny", "--limit", "4", "--repeats", "1", "--workdir", str(tmp_path)]
    assert bench_gpu.main(argv) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ")][2:]
    rows = {line.split(" | ")[0][2:]: line.split(" | ") for line in lines}
    assert list(rows) == [
        "fm, one sequence at a time (fp32)",
        "fm, tutorial chunks of 20 (fp32)",
        "rnafm-hf embed (fp32)",
        "rnafm-hf embed (bf16)",
    ]
    assert float(rows["rnafm-hf embed (fp32)"][-1].rstrip(" |")) <= 1e-5
    assert float(rows["rnafm-hf embed (bf16)"][-1].rstrip(" |")) < 0.05


def test_gpu_benchmark_says_when_there_is_no_gpu(capsys, monkeypatch):
    spec = importlib.util.spec_from_file_location("bench_gpu", BENCH_GPU)
    bench_gpu = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench_gpu)
    monkeypatch.setattr(bench_gpu.torch.cuda, "is_available", lambda: False)
    assert bench_gpu.main([]) == 2
    assert "No CUDA GPU here" in capsys.readouterr().err
