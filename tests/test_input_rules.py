"""One set of input rules for embed, fold, the structure pipeline and the web app, and a CLI that answers a user's
mistake with one line and exit status 1 (2 for usage), never a traceback."""

from __future__ import annotations

import errno
import re
from pathlib import Path

import pytest
import torch
from transformers import pipeline

import rnafm_hf
from rnafm_hf import InvalidSequencesError, RnaFmForSecondaryStructure
from rnafm_hf.cli import main

BAD_FASTA = (
    ">fine\nGGGAAACCCU\n"
    ">twice\nACGUACGU\n"
    ">twice\nACGU\n"
    ">empty\n\n"
    ">odd\nACGXUZ\n"
    f">long\n{'ACGU' * 260}\n"
    ">also_fine\nacgt\n"
)
EXPECTED = [
    "record 3 ('twice'): duplicate id (first at record 2)",
    "record 4 ('empty'): empty sequence",
    "record 5 ('odd'): letters outside the model's alphabet",
    "record 6 ('long'): 1040 nt, longer than the 1022 nt the model reads",
]


@pytest.fixture
def bad_fasta(tmp_path) -> Path:
    path = tmp_path / "bad.fasta"
    path.write_text(BAD_FASTA)
    return path


def listed(err: str) -> list[str]:
    """The records an error lists, each up to its reason's first words."""
    return [line.strip() for line in err.splitlines() if re.match(r"\s+record \d+ \(", line)]


def one_error_line(capsys, command: str) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    return err[err.index(f"rnafm-hf {command}: error: ") :]


def test_embed_and_fold_list_the_same_records_before_any_compute(
    bad_fasta, tmp_path, saved_folder, structure_folder, capsys, monkeypatch
):
    def no_compute(*args, **kwargs):
        raise AssertionError("the model ran before the inputs were checked")

    monkeypatch.setattr(rnafm_hf.RnaFmModel, "forward", no_compute)
    monkeypatch.setattr(RnaFmForSecondaryStructure, "forward", no_compute)
    assert main(["embed", str(bad_fasta), "--model", str(saved_folder), "-o", str(tmp_path / "e")]) == 1
    embedded = listed(one_error_line(capsys, "embed"))
    assert main(["fold", str(bad_fasta), "--model", str(structure_folder), "-o", str(tmp_path / "f")]) == 1
    folded = listed(one_error_line(capsys, "fold"))
    # The same records for the same reasons; only the remedy for over-long ones is each command's own.
    assert [line.split(";")[0] for line in embedded] == [line.split(";")[0] for line in folded]
    assert len(folded) == 4
    for line, expected in zip(folded, EXPECTED, strict=True):
        assert line.startswith(expected), line
    assert "'X' at 4, 'Z' at 6" in folded[2]
    assert not (tmp_path / "e").exists() and not (tmp_path / "f").exists()


def test_fold_skip_invalid_folds_the_rest_and_lists_the_skipped(
    bad_fasta, tmp_path, structure_folder, capsys
):
    out = tmp_path / "structures"
    assert (
        main(["fold", str(bad_fasta), "--model", str(structure_folder), "-o", str(out), "--skip-invalid"])
        == 0
    )
    err = capsys.readouterr().err
    assert all(f"Skipping {expected}" in err for expected in EXPECTED)
    assert sorted(path.name for path in out.glob("*.ct")) == ["also_fine.ct", "fine.ct", "twice.ct"]
    summary = (out / "summary.tsv").read_text().splitlines()
    assert len(summary) == 8 and summary[5].startswith("odd\t\t6\t\t\t\tletters outside")


def test_the_structure_pipeline_checks_a_whole_list_first(structure_folder, monkeypatch):
    fold = pipeline("rna-secondary-structure", model=str(structure_folder))

    def no_compute(*args, **kwargs):
        raise AssertionError("the model ran before the inputs were checked")

    monkeypatch.setattr(RnaFmForSecondaryStructure, "forward", no_compute)
    with pytest.raises(InvalidSequencesError) as error:
        fold(["ACGU", "", "ACGNNJ", "ACGU" * 260])
    assert [str(item) for item in error.value.invalid] == [
        "record 2 ('sequence 2'): empty sequence",
        "record 3 ('sequence 3'): letters outside the model's alphabet (A C G U R Y K M S W B D H V N -): 'J' "
        "at 6",
        "record 4 ('sequence 4'): 1040 nt, longer than the 1022 nt the model reads; fold it with long='window', or a shorter region",
    ]
    with pytest.raises(InvalidSequencesError, match="letters outside"):
        fold("ACGUJ")


@pytest.mark.parametrize("device", ["cuda", "cuda:7", "gpu", "cuda0"])
def test_a_device_this_machine_lacks_is_one_line(tmp_path, saved_folder, structure_folder, capsys, device):
    if device.startswith("cuda") and torch.cuda.is_available() and device != "cuda0":
        pytest.skip("this machine has a GPU")
    fasta = tmp_path / "x.fasta"
    fasta.write_text(">a\nACGU\n")
    for command, model in (("embed", saved_folder), ("fold", structure_folder)):
        assert (
            main(
                [
                    command,
                    str(fasta),
                    "--model",
                    str(model),
                    "-o",
                    str(tmp_path / command),
                    "--device",
                    device,
                ]
            )
            == 1
        )
        line = one_error_line(capsys, command)
        assert f"device {device!r}" in line and "this machine has: cpu" in line


def test_file_system_errors_name_the_file(tmp_path, saved_folder, capsys, monkeypatch):
    fasta = tmp_path / "x.fasta"
    fasta.write_text(">a\nACGU\n")

    def denied(handle, array):
        raise PermissionError(errno.EACCES, "Permission denied", str(tmp_path / "out" / "a.npy"))

    monkeypatch.setattr(rnafm_hf.embedding_store.np, "save", denied)
    assert main(["embed", str(fasta), "--model", str(saved_folder), "-o", str(tmp_path / "out")]) == 1
    assert f"permission denied: {tmp_path / 'out' / 'a.npy'}" in one_error_line(capsys, "embed")

    def full(handle, array):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(rnafm_hf.embedding_store.np, "save", full)
    assert main(["embed", str(fasta), "--model", str(saved_folder), "-o", str(tmp_path / "full")]) == 1
    line = one_error_line(capsys, "embed")
    assert f"no space left on device while writing {tmp_path / 'full' / 'a.npy'}" in line


def test_missing_model_files_and_interruptions(tmp_path, saved_folder, capsys, monkeypatch):
    fasta = tmp_path / "x.fasta"
    fasta.write_text(">a\nACGU\n")
    broken = tmp_path / "no-weights"
    broken.mkdir()
    (broken / "config.json").write_text((saved_folder / "config.json").read_text())
    assert main(["embed", str(fasta), "--model", str(broken), "-o", str(tmp_path / "out")]) == 1
    assert str(broken) in one_error_line(capsys, "embed")

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(rnafm_hf.RnaFmModel, "forward", interrupted)
    assert main(["embed", str(fasta), "--model", str(saved_folder), "-o", str(tmp_path / "out")]) == 130
    err = capsys.readouterr().err
    assert "interrupted" in err and "Traceback" not in err


def test_usage_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as exited:
        main(["fold", "x.fasta", "--no-such-option"])
    assert exited.value.code == 2


def test_embed_checks_its_inputs_when_called_not_when_read(saved_folder):
    """The iterator is lazy, the checks are not: bad input fails at the call, before a loop starts."""
    with pytest.raises(InvalidSequencesError, match="'X' at 3"):
        rnafm_hf.embed(["ACXU"], saved_folder, progress=False, log=None)
    with pytest.raises(ValueError, match="Layer 9 does not exist"):
        rnafm_hf.embed(["ACGU"], saved_folder, layers=9, progress=False, log=None)
    vectors = rnafm_hf.embed(["ACGU"], saved_folder, progress=False, log=None)
    assert [identifier for identifier, _ in vectors] == ["0"]


def test_adversarial_findings(tmp_path, structure_folder, saved_folder, capsys, monkeypatch):
    """Found by an adversarial sweep: a bad --batch-size is a usage error before any folder is claimed; --skip-invalid
    with nothing left says so; a newer rnafm-hf's folder is not resumed; a broken link as --output is named; the
    web app folds records as they are (an id holding a line break is refused, not split)."""
    fasta = tmp_path / "x.fasta"
    fasta.write_text(">a\nACGU\n")
    with pytest.raises(SystemExit) as exited:
        main(
            [
                "fold",
                str(fasta),
                "--model",
                str(structure_folder),
                "-o",
                str(tmp_path / "f"),
                "--batch-size",
                "0",
            ]
        )
    assert exited.value.code == 2 and not (tmp_path / "f").exists()

    bad = tmp_path / "bad.fasta"
    bad.write_text(">a\nACXU\n")
    assert (
        main(
            ["fold", str(bad), "--model", str(structure_folder), "-o", str(tmp_path / "g"), "--skip-invalid"]
        )
        == 1
    )
    assert "No record is left to be folded once they are skipped" in capsys.readouterr().err

    out = tmp_path / "newer"
    assert main(["fold", str(fasta), "--model", str(structure_folder), "-o", str(out)]) == 0
    marker = out / ".rnafm-hf.json"
    marker.write_text(marker.read_text().replace(f'"{rnafm_hf.__version__}"', '"99.0"'))
    assert main(["fold", str(fasta), "--model", str(structure_folder), "-o", str(out)]) == 1
    assert "newer than this one" in capsys.readouterr().err

    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere" / "zz")
    assert main(["fold", str(fasta), "--model", str(structure_folder), "-o", str(tmp_path / "dangling")]) == 1
    assert "is a broken symbolic link" in capsys.readouterr().err

    from rnafm_hf.server import RequestError, RnaFmServer

    server = RnaFmServer(saved_folder, structure_folder)
    with pytest.raises(RequestError, match=r"record 1 \('x\\n>evil'\): ids may not hold"):
        server.fold([("x\n>evil", "ACGU")])
