"""Output folders of `embed`, `fold` and `convert`: owned (marker and ledger), never replaced when foreign, only
their own files deleted by --overwrite, whole files only after a kill or a full disk, resumed to the uninterrupted
result, and locked against a second run."""

from __future__ import annotations

import errno
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from original_checkpoints import write_original_checkpoint

import rnafm_hf.embedding_store
import rnafm_hf.folding
import rnafm_hf.output_folder
from rnafm_hf import RnaFmTokenizer
from rnafm_hf.cli import main
from rnafm_hf.output_folder import (
    LEDGER_NAME,
    NAMESPACE,
    FolderInUseError,
    NoSpaceError,
    OutputFolder,
    hold_lock,
    sibling_lock,
)
from rnafm_hf.structure import FORMATS, SecondaryStructure

COUNT = 120  # sequences to fold: enough that a run is still going when the test has seen a few finish
# One thread, like this process (conftest), so that a subprocess's sums round exactly as ours.
ONE_THREAD = {**os.environ, "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def fasta(tmp_path_factory) -> Path:
    generator = random.Random(18)
    path = tmp_path_factory.mktemp("input") / "many.fasta"
    path.write_text(
        "".join(
            f">rna{n}\n{''.join(generator.choice('ACGU') for _ in range(generator.randint(20, 60)))}\n"
            for n in range(COUNT)
        )
    )
    return path


def fold(fasta: Path, model: Path, output: Path, *extra: str) -> int:
    return main(["fold", str(fasta), "--model", str(model), "-o", str(output), "--batch-size", "1", *extra])


@pytest.fixture(scope="module")
def reference(fasta, structure_folder, tmp_path_factory) -> Path:
    """What an uninterrupted run writes."""
    output = tmp_path_factory.mktemp("reference") / "structures"
    assert fold(fasta, structure_folder, output) == 0
    return output


def files(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` (hidden ones too, and below), by relative path: to compare byte for byte."""
    return {
        os.fspath(path.relative_to(folder)): path.read_bytes() for path in folder.rglob("*") if path.is_file()
    }


def outputs(folder: Path) -> list[str]:
    """The output files, without the folder's bookkeeping."""
    return sorted(path.name for path in folder.iterdir() if not path.name.startswith(NAMESPACE))


def assert_only_complete_structures(folder: Path) -> None:
    """Whatever is under a final name is whole: every map loads, every structure file parses."""
    for path in folder.iterdir():
        if path.name.startswith("."):
            continue
        if path.suffix == ".npy":
            probabilities = np.load(path)
            assert probabilities.ndim == 2 and probabilities.shape[0] == probabilities.shape[1] > 0, path
        elif path.suffix[1:] in FORMATS:
            assert SecondaryStructure.read(path).sequence, path
        else:
            assert path.name == "summary.tsv", path


def assert_same_structures(folder: Path, reference: Path) -> None:
    assert outputs(folder) == outputs(reference)
    for name in outputs(reference):
        if name.endswith(".npy"):
            assert np.array_equal(np.load(folder / name), np.load(reference / name)), name
        else:
            assert (folder / name).read_bytes() == (reference / name).read_bytes(), name


def error_line(capsys, command: str) -> str:
    lines = [
        line for line in capsys.readouterr().err.splitlines() if line.startswith(f"rnafm-hf {command}: ")
    ]
    assert len(lines) == 1, lines
    return lines[0]


# ---- foreign folders -------------------------------------------------------------------------------------------


def test_embed_overwrite_refuses_a_users_folder_and_keeps_every_byte(tmp_path, saved_folder, capsys):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "run.json").write_text('{"model": "my own model"}\n')
    np.save(mine / "hairpin.npy", np.arange(12.0))
    (mine / "index.tsv").write_text("id\tfile\nhairpin\thairpin.npy\n")
    (mine / ".hairpin.npy.123.partial").write_bytes(b"mine too")
    before = files(mine)
    fasta = tmp_path / "one.fasta"
    fasta.write_text(">hairpin\nGGGGAAACCCC\n")
    assert main(["embed", str(fasta), "--model", str(saved_folder), "-o", str(mine), "--overwrite"]) == 1
    line = error_line(capsys, "embed")
    assert line.startswith("rnafm-hf embed: error: ") and "not written by rnafm-hf embed" in line
    assert files(mine) == before


def test_fold_overwrite_refuses_a_users_folder_and_keeps_every_byte(
    tmp_path, fasta, structure_folder, capsys
):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "summary.tsv").write_text("id\tfile\nprecious\tprecious\nthesis\t../thesis\n")
    for suffix in ("ct", "bpseq", "dbn", "npy", "png"):
        (mine / f"precious.{suffix}").write_text(f"my {suffix}")
    (tmp_path / "thesis.ct").write_text("outside")
    before, outside = files(mine), (tmp_path / "thesis.ct").read_bytes()
    assert fold(fasta, structure_folder, mine, "--overwrite") == 1
    assert "not written by rnafm-hf fold" in error_line(capsys, "fold")
    assert files(mine) == before and (tmp_path / "thesis.ct").read_bytes() == outside


def test_convert_overwrite_refuses_a_users_folder_and_keeps_every_byte(tmp_path, capsys):
    checkpoint = write_original_checkpoint(tmp_path / "RNA-FM_x.pth")
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "config.json").write_text('{"model_type": "bert"}\n')
    (mine / "model.safetensors").write_bytes(b"my weights")
    (mine / "notes.txt").write_text("keep")
    before = files(mine)
    assert main(["convert", str(checkpoint), "-o", str(mine), "--no-verify", "--overwrite"]) == 1
    assert "not written by rnafm-hf convert" in error_line(capsys, "convert")
    assert files(mine) == before


def test_a_folder_of_another_command_is_refused(tmp_path, fasta, structure_folder, saved_folder, capsys):
    structures = tmp_path / "structures"
    (tmp_path / "one.fasta").write_text(">a\nGGGGAAACCCC\n")
    assert fold(tmp_path / "one.fasta", structure_folder, structures) == 0
    before = files(structures)
    assert (
        main(["embed", str(fasta), "--model", str(saved_folder), "-o", str(structures), "--overwrite"]) == 1
    )
    assert "was written by rnafm-hf fold, not embed" in error_line(capsys, "embed")
    checkpoint = write_original_checkpoint(tmp_path / "RNA-FM_x.pth")
    assert main(["convert", str(checkpoint), "-o", str(structures), "--no-verify", "--overwrite"]) == 1
    assert "was written by rnafm-hf fold, not convert" in error_line(capsys, "convert")
    assert files(structures) == before


# ---- --overwrite in an owned folder: our files go, the user's stay -----------------------------------------------


def tamper(folder: Path, *names: str) -> None:
    """Names no rnafm-hf run writes, as a damaged ledger might list them: paths out of the folder."""
    with open(folder / LEDGER_NAME, "a") as ledger:
        ledger.writelines(f'"{name}"\n' for name in names)


def test_embed_overwrite_replaces_its_own_files_and_keeps_the_users(tmp_path, saved_folder):
    out = tmp_path / "embeddings"
    options = {"tokenizer": RnaFmTokenizer(), "progress": False, "log": None}
    rnafm_hf.embed_to_folder({"a": "ACGU", "b": "GGCC"}, out, saved_folder, **options)
    (out / "notes.txt").write_text("my notes")
    np.save(out / "mine.npy", np.arange(3.0))
    (tmp_path / "outside.npy").write_bytes(b"outside")
    tamper(out, "../outside.npy", "..", "/etc/hostname")
    kept = {name: (out / name).read_bytes() for name in ("notes.txt", "mine.npy")}

    with pytest.raises(FileExistsError, match="different settings"):
        rnafm_hf.embed_to_folder({"a": "ACGU", "b": "GGCC"}, out, saved_folder, pooling="mean", **options)
    with pytest.raises(FileExistsError, match=r"holds mine.npy, which rnafm-hf embed would write"):
        rnafm_hf.embed_to_folder({"mine": "ACGU"}, out, saved_folder, overwrite=True, **options)
    assert outputs(out) == ["a.npy", "b.npy", "index.tsv", "mine.npy", "notes.txt", "run.json"]

    rnafm_hf.embed_to_folder({"c": "AAGU"}, out, saved_folder, pooling="mean", overwrite=True, **options)
    assert outputs(out) == ["c.npy", "index.tsv", "mine.npy", "notes.txt", "run.json"]
    assert {name: (out / name).read_bytes() for name in kept} == kept
    assert (tmp_path / "outside.npy").read_bytes() == b"outside"
    assert list(rnafm_hf.load_embeddings(out)) == ["c"]


def test_fold_overwrite_replaces_its_own_files_and_keeps_the_users(tmp_path, structure_folder, capsys):
    fasta = tmp_path / "two.fasta"
    fasta.write_text(">a\nGGGGAAACCCC\n>b\nGGGAAAUCC\n")
    out = tmp_path / "structures"
    assert fold(fasta, structure_folder, out) == 0
    (out / "notes.txt").write_text("my notes")
    (out / "a.png").write_bytes(b"my drawing of a, not a fold plot")
    (tmp_path / "outside.ct").write_text("outside")
    tamper(out, "../outside.ct")
    kept = {name: (out / name).read_bytes() for name in ("notes.txt", "a.png")}

    assert fold(fasta, structure_folder, out, "--formats", "dbn") == 1  # other settings: not mixed in
    assert "different formats" in error_line(capsys, "fold")
    assert fold(fasta, structure_folder, out, "--formats", "dbn", "--overwrite") == 0
    assert outputs(out) == ["a.dbn", "a.png", "b.dbn", "notes.txt", "summary.tsv"]
    assert {name: (out / name).read_bytes() for name in kept} == kept
    assert (tmp_path / "outside.ct").read_text() == "outside"


def test_convert_overwrite_replaces_its_own_files_and_keeps_the_users(tmp_path, capsys):
    checkpoint = write_original_checkpoint(tmp_path / "RNA-FM_x.pth")
    out = tmp_path / "rna-fm"
    assert main(["convert", str(checkpoint), "-o", str(out), "--no-verify"]) == 0
    written = set(outputs(out))
    (out / "notes.txt").write_text("my notes")
    (out / "old-weights.bin").write_bytes(b"from an earlier run, listed as such")
    (OutputFolder(out, "convert").ledger).append("old-weights.bin")
    (tmp_path / "outside.txt").write_text("outside")
    tamper(out, "../outside.txt")
    kept = (out / "notes.txt").read_bytes()

    assert main(["convert", str(checkpoint), "-o", str(out), "--no-verify"]) == 1
    assert "pass --overwrite to replace it" in error_line(capsys, "convert")
    assert (
        main(["convert", str(checkpoint), "-o", str(out), "--no-verify", "--overwrite", "--dtype", "float16"])
        == 0
    )
    assert set(outputs(out)) == written | {"notes.txt"}
    assert (out / "notes.txt").read_bytes() == kept and (tmp_path / "outside.txt").read_text() == "outside"
    assert '"float16"' in (out / "config.json").read_text()
    assert not [path for path in tmp_path.iterdir() if ".partial-" in path.name]

    (out / "tokenizer.json").unlink()
    (out / "tokenizer.json").write_text("my own tokenizer, under a name convert writes")
    (OutputFolder(out, "convert").ledger).rewrite(sorted(written - {"tokenizer.json"}))
    assert main(["convert", str(checkpoint), "-o", str(out), "--no-verify", "--overwrite"]) == 1
    assert "holds tokenizer.json, which rnafm-hf convert would write" in error_line(capsys, "convert")
    assert (out / "tokenizer.json").read_text() == "my own tokenizer, under a name convert writes"


# ---- kills, failures and full disks ------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_fold_killed_by_sigkill_leaves_whole_files_and_resumes_to_the_uninterrupted_result(
    tmp_path, fasta, structure_folder, reference
):
    out = tmp_path / "killed"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "rnafm_hf",
            "fold",
            str(fasta),
            "--model",
            str(structure_folder),
            "-o",
            str(out),
        ]
        + ["--batch-size", "1"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=ONE_THREAD,
    )
    try:
        while process.poll() is None and len(list(out.glob("*.npy"))) < 5:
            time.sleep(0.002)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    assert process.returncode == -signal.SIGKILL, "the run should have been killed midway"
    assert 5 <= len(list(out.glob("*.npy"))) < COUNT and not (out / "summary.tsv").exists()
    assert_only_complete_structures(out)  # a temporary (hidden) file may be left; never a cut-short final one

    assert fold(fasta, structure_folder, out) == 0
    assert not [path for path in out.iterdir() if path.name.endswith(".partial")]
    assert_same_structures(out, reference)


def test_fold_resumes_after_a_failure_and_refuses_other_settings(
    tmp_path, fasta, structure_folder, reference, monkeypatch, capsys
):
    out = tmp_path / "failed"
    calls = []
    write = OutputFolder.write

    def failing(self, name, writer):
        calls.append(name)
        if len(calls) == 23:  # the 3rd file of the 6th record
            raise RuntimeError("injected failure")
        return write(self, name, writer)

    monkeypatch.setattr(OutputFolder, "write", failing)
    with pytest.raises(RuntimeError, match="injected failure"):
        fold(fasta, structure_folder, out)
    monkeypatch.undo()
    assert len(outputs(out)) == 22 and not (out / "summary.tsv").exists()
    assert_only_complete_structures(out)

    assert fold(fasta, structure_folder, out, "--threshold", "0.9") == 1
    assert "different threshold" in error_line(capsys, "fold")
    assert fold(fasta, structure_folder, out, "--canonical-only", "--formats", "ct") == 1
    assert "different canonical_only, formats" in error_line(capsys, "fold")
    assert fold(fasta, structure_folder, out) == 0
    assert f"Resuming: 5 of {COUNT} sequences are already in" in capsys.readouterr().err
    assert_same_structures(out, reference)
    assert fold(fasta, structure_folder, out) == 0  # a finished run: nothing to do, the same files
    assert_same_structures(out, reference)


def test_a_full_disk_names_the_file_and_leaves_whole_files_that_a_rerun_finishes(
    tmp_path, fasta, structure_folder, reference
):
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=192k", "tmpfs", str(disk)], capture_output=True, text=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr.strip()}")
    try:
        out = disk / "structures"
        with pytest.raises(NoSpaceError) as caught:
            rnafm_hf.folding.fold_fasta(fasta, structure_folder, out, batch_size=1, progress=False, log=print)
        error = caught.value
        assert error.errno == errno.ENOSPC and Path(error.filename).parent == out
        assert str(error) == f"no space left on device while writing {error.filename}"
        assert not [path for path in out.iterdir() if path.name.endswith(".partial")]
        assert 0 < len(list(out.glob("*.npy"))) < COUNT and not (out / "summary.tsv").exists()
        assert_only_complete_structures(out)

        subprocess.run(["mount", "-o", "remount,size=16m", str(disk)], check=True)
        assert fold(fasta, structure_folder, out) == 0
        assert_same_structures(out, reference)
    finally:
        subprocess.run(["umount", str(disk)], check=True)


def test_a_full_disk_while_embedding_names_the_file(tmp_path, saved_folder, monkeypatch):
    def full(handle, array):
        handle.write(b"\x93NUMPY half an array")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(rnafm_hf.embedding_store.np, "save", full)
    out = tmp_path / "embeddings"
    with pytest.raises(NoSpaceError) as caught:
        rnafm_hf.embed_to_folder(
            {"a": "ACGU"}, out, saved_folder, tokenizer=RnaFmTokenizer(), progress=False, log=None
        )
    assert caught.value.errno == errno.ENOSPC and caught.value.filename == os.fspath(out / "a.npy")
    assert str(caught.value) == f"no space left on device while writing {out / 'a.npy'}"
    assert outputs(out) == ["run.json"]
    assert not [path for path in out.iterdir() if path.name.endswith(".partial")]


# ---- two runs at once ---------------------------------------------------------------------------------------------

# Holds a folder's lock through the module alone (not the package, which imports torch), then sleeps.
HOLDER = """
import importlib.util, pathlib, sys, time
spec = importlib.util.spec_from_file_location("output_folder", sys.argv[1])
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
with module.OutputFolder(pathlib.Path(sys.argv[2]), "fold").locked():
    print("locked", flush=True)
    time.sleep(600)
"""


def test_a_second_fold_on_a_folder_being_written_is_refused_until_the_first_dies(
    tmp_path, structure_folder, capsys
):
    fasta = tmp_path / "one.fasta"
    fasta.write_text(">a\nGGGGAAACCCC\n")
    out = tmp_path / "structures"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, rnafm_hf.output_folder.__file__, str(out)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline() == "locked\n"
        assert fold(fasta, structure_folder, out) == 1
        line = error_line(capsys, "fold")
        assert f"{out} is being written by another rnafm-hf run (pid {holder.pid})" in line
        assert outputs(out) == []
    finally:
        holder.send_signal(signal.SIGKILL)  # the kernel releases its lock: no stale lock remains
        holder.wait()
    assert fold(fasta, structure_folder, out) == 0
    assert outputs(out) == ["a.bpseq", "a.ct", "a.dbn", "a.npy", "summary.tsv"]


def test_a_second_embed_or_convert_on_an_output_being_written_is_refused(tmp_path, saved_folder, capsys):
    fasta = tmp_path / "one.fasta"
    fasta.write_text(">a\nGGGGAAACCCC\n")
    out = tmp_path / "embeddings"
    with OutputFolder(out, "embed").locked():
        assert main(["embed", str(fasta), "--model", str(saved_folder), "-o", str(out)]) == 1
        assert f"is being written by another rnafm-hf run (pid {os.getpid()})" in error_line(capsys, "embed")
        with pytest.raises(FolderInUseError):
            rnafm_hf.embed_to_folder(fasta, out, saved_folder, progress=False, log=None)
    assert outputs(out) == []
    assert main(["embed", str(fasta), "--model", str(saved_folder), "-o", str(out)]) == 0

    checkpoint = write_original_checkpoint(tmp_path / "RNA-FM_x.pth")
    model = tmp_path / "rna-fm"
    with hold_lock(sibling_lock(model), model):
        assert main(["convert", str(checkpoint), "-o", str(model), "--no-verify"]) == 1
        assert f"{model} is being written by another rnafm-hf run (pid {os.getpid()})" in error_line(
            capsys, "convert"
        )
    assert not model.exists() and not [path for path in tmp_path.iterdir() if ".partial-" in path.name]
    assert main(["convert", str(checkpoint), "-o", str(model), "--no-verify"]) == 0
