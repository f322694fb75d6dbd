"""The first hour of a new user: the released model without --model (its Hub download mocked), model names read
as the user means them, and a command line that answers --help and argument errors without loading torch."""

from __future__ import annotations

import importlib
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from original_checkpoints import write_original_checkpoint

import rnafm_hf
from rnafm_hf import model_names
from rnafm_hf.cli import main

FASTA = ">hairpin\nGGGAAACCC\n>short\nACGU\n"


@pytest.fixture
def released_hub(tmp_path, monkeypatch):
    """A Hub whose cuhkaih/rnafm serves a tiny RNA-FM file in the original format; records each download."""
    served = tmp_path / "hub" / "RNA-FM_pretrained.pth"
    served.parent.mkdir()
    write_original_checkpoint(served)
    downloads = []

    def hf_hub_download(repo_id, filename, **kwargs):
        downloads.append((repo_id, filename))
        if (repo_id, filename) != ("cuhkaih/rnafm", "RNA-FM_pretrained.pth"):
            raise FileNotFoundError(f"{repo_id} has no {filename}")
        return str(served)

    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", hf_hub_download)
    monkeypatch.setenv("RNAFM_HF_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)  # no folder named rna-fm here
    return downloads, served


def test_embed_without_model_downloads_converts_once_and_embeds(released_hub, tmp_path, monkeypatch, capsys):
    from rnafm_hf import conversion

    downloads, served = released_hub
    conversions = []
    convert = conversion.convert_checkpoint
    monkeypatch.setattr(
        conversion, "convert_checkpoint", lambda *a, **k: conversions.append(a[0]) or convert(*a, **k)
    )
    (tmp_path / "my.fasta").write_text(FASTA)

    assert main(["embed", "my.fasta", "-o", "first"]) == 0
    assert downloads == [("cuhkaih/rnafm", "RNA-FM_pretrained.pth")] and conversions == [served]
    cached = model_names.converted_cache() / "rna-fm"
    assert (
        cached / "model.safetensors"
    ).is_file() and "Converting the released rna-fm" in capsys.readouterr().err

    assert main(["embed", "my.fasta", "-o", "second"]) == 0
    assert len(downloads) == 1 and len(conversions) == 1  # the cache, as it is
    # The same numbers as the folder converted by hand.
    assert main(["convert", str(served), "-o", "by-hand"]) == 0
    assert main(["embed", "my.fasta", "--model", "by-hand", "-o", "third"]) == 0
    for name in ("hairpin", "short"):
        expected = np.load(tmp_path / "third" / f"{name}.npy")
        assert np.array_equal(np.load(tmp_path / "first" / f"{name}.npy"), expected)
        assert np.array_equal(np.load(tmp_path / "second" / f"{name}.npy"), expected)
    assert model_names.released_model_folder("rna-fm") == cached


def test_the_readme_main_job_runs_as_written(released_hub, tmp_path):
    from test_readme import RELEASED_MODEL_JOB, SHELL_BLOCKS

    assert RELEASED_MODEL_JOB in [block.strip() for block in SHELL_BLOCKS]
    (tmp_path / "my.fasta").write_text(FASTA)
    assert main(shlex.split(RELEASED_MODEL_JOB)[1:]) == 0
    assert sorted(path.name for path in (tmp_path / "embeddings").glob("*.npy")) == [
        "hairpin.npy",
        "short.npy",
    ]


def test_a_failed_download_says_what_was_tried_and_how_to_convert(released_hub, tmp_path, capsys):
    (tmp_path / "my.fasta").write_text(FASTA)
    assert main(["embed", "my.fasta", "--model", "mrna-fm", "-o", "out"]) == 1
    error = capsys.readouterr().err
    assert "Could not get the released mRNA-FM_pretrained.pth from the Hub repo cuhkaih/rnafm" in error
    assert str(model_names.converted_cache()) in error
    assert "rnafm-hf convert mRNA-FM_pretrained.pth --output FOLDER" in error


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("rna_fm", "No such folder: 'rna_fm'. Did you mean 'rna-fm'?"),
        ("../rna-fm", "No such folder: '../rna-fm'."),
        ("models/sub/rna-fm", "No such folder: 'models/sub/rna-fm'."),
        ("empty", "'empty' is a folder but not a model folder: it has no config.json"),
        ("notes.txt", "'notes.txt' is a file, not a model folder"),
        ("someone/rna-fm", "HF_HUB_OFFLINE=1 forbids downloading it from the Hub"),
    ],
)
def test_model_names_mean_what_the_user_means(tmp_path, monkeypatch, capsys, name, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "rna-fm").mkdir()
    (tmp_path / "empty").mkdir()
    (tmp_path / "notes.txt").write_text("hi")
    (tmp_path / "my.fasta").write_text(FASTA)
    assert main(["embed", "my.fasta", "--model", name, "-o", "out"]) == 1
    assert message in capsys.readouterr().err


def test_hub_ids_and_paths_are_told_apart():
    assert model_names.looks_like_hub_id("cuhkaih/rnafm")
    for path in ("./rna-fm", "../rna-fm", "/data/rna-fm", "a/b/c", "rna-fm", "~/rna-fm", "a b/c"):
        assert not model_names.looks_like_hub_id(path), path


def command_imports(*arguments: str, cwd: Path) -> tuple[subprocess.CompletedProcess, set[str]]:
    """`python -m rnafm_hf ARGUMENTS` with Python's import log: the result and the top-level packages imported."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "rnafm_hf", *arguments],
        capture_output=True,
        text=True,
        cwd=cwd,
    )
    imported = {
        line.rsplit("|", 1)[-1].strip().split(".")[0] for line in done.stderr.splitlines() if "|" in line
    }
    return done, imported


@pytest.mark.parametrize(
    ("arguments", "code", "output"),
    [
        (["--help"], 0, "convert"),
        (["--version"], 0, "rnafm-hf "),
        (["embed", "--help"], 0, "--batch-tokens"),
        (["fold", "--help"], 0, "--canonical-only"),
        (["serve", "--help"], 0, "--max-fold-cost"),
        (
            ["embed", "x.fasta", "-o", "out", "--batch-tokens", "0"],
            2,
            "expected a whole number of at least 1",
        ),
        (["embed", "missing.fasta", "-o", "out"], 1, "no such FASTA file: missing.fasta"),
        (["convert", "missing.pth"], 1, "no such checkpoint: missing.pth"),
    ],
)
def test_the_command_answers_help_and_argument_errors_without_torch(tmp_path, arguments, code, output):
    done, imported = command_imports(*arguments, cwd=tmp_path)
    assert done.returncode == code, done.stderr[-2000:]
    assert output in done.stdout + done.stderr
    assert not imported & {"torch", "transformers", "numpy", "huggingface_hub"}


def test_model_cards_say_when_the_weights_are_not_the_released_ones(tmp_path):
    stand_in = tmp_path / "RNA-FM_random.pth"
    script = Path(__file__).resolve().parents[1] / "conversion" / "make_random_checkpoint.py"
    subprocess.run(
        [
            sys.executable,
            script,
            stand_in,
            "--hidden-size",
            "32",
            "--heads",
            "4",
            "--intermediate-size",
            "64",
        ],
        check=True,
        capture_output=True,
    )
    write_original_checkpoint(tmp_path / "small.pth")  # fm's own classes: no marker, other sizes
    for source, folder in ((stand_in, "stand-in"), (tmp_path / "small.pth", "small")):
        assert main(["convert", str(source), "-o", str(tmp_path / folder), "--no-verify"]) == 0
    card = (tmp_path / "stand-in" / "README.md").read_text()
    assert "**Random weights: not the released model.**" in card
    assert "layers 2, width 32, heads 4, feed-forward width 64" in card
    card = (tmp_path / "small" / "README.md").read_text()
    assert "**Not the released model: other sizes.** This folder has layers 2, width 32, heads 4" in card
    assert "the released model has layers 12, width 640, heads 20, feed-forward width 5120" in card


def test_a_two_part_path_under_a_local_folder_is_a_path(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "out" / "rna-fm").mkdir(parents=True)
    (tmp_path / "my.fasta").write_text(FASTA)
    assert main(["embed", "my.fasta", "--model", "out/rna_fm", "-o", "x"]) == 1
    assert "No such folder: 'out/rna_fm'. Did you mean 'out/rna-fm'?" in capsys.readouterr().err


def test_a_non_model_folder_named_like_a_released_model_gives_way_to_it(released_hub, tmp_path, capsys):
    (tmp_path / "rna-fm").mkdir()  # e.g. an earlier `embed -o rna-fm`
    (tmp_path / "my.fasta").write_text(FASTA)
    assert main(["embed", "my.fasta", "-o", "out"]) == 0
    assert "The folder 'rna-fm' here is not a model folder (no config.json): using the released rna-fm." in (
        capsys.readouterr().err
    )


@pytest.mark.parametrize(
    ("orig_argv", "argv0", "command"),
    [
        (["python", "-X", "importtime", "-m", "rnafm_hf", "embed"], "-m", True),
        (["python", "/usr/bin/rnafm-hf", "embed"], "/usr/bin/rnafm-hf", True),
        (["python", "train.py", "-m", "rnafm_hf"], "train.py", False),
        (["python", "-c", "import rnafm_hf", "-m", "rnafm_hf"], "-c", False),
        (["python", "-m", "rnafm_hf.stand_in", "x.pth"], "-m", False),
        ([], None, False),
    ],
)
def test_only_the_command_itself_defers_registration(monkeypatch, orig_argv, argv0, command):
    import rnafm_hf

    monkeypatch.setattr(sys, "orig_argv", orig_argv)
    monkeypatch.setattr(sys, "argv", [] if argv0 is None else [argv0])
    assert rnafm_hf._started_as_the_command() is command


@pytest.mark.parametrize("module", ["configuration_rnafm", "modeling_rnafm", "tokenization_rnafm"])
def test_the_package_exports_every_class_of_the_model_modules(module):
    """The lazy package lists its public names by hand (transformers' own lazy module would cost about 2 s of
    imports before `--help`): every public name of the configuration, model and tokenizer modules is among them."""
    defining = importlib.import_module(f"rnafm_hf.{module}")
    for name in defining.__all__:
        assert getattr(rnafm_hf, name) is getattr(defining, name), f"rnafm_hf.{name} is missing from _EXPORTS"


def test_every_phrase_the_command_turns_into_flags_is_still_in_the_library():
    """cli.py rewrites the library's parameter phrases as flags; a phrase reworded in the library would silently
    stop being rewritten."""
    from rnafm_hf.cli import PARAMETERS_AS_FLAGS

    package = Path(rnafm_hf.__file__).parent
    library = "".join(path.read_text() for path in package.glob("*.py") if path.name != "cli.py")
    assert [phrase for phrase in PARAMETERS_AS_FLAGS if phrase not in library] == []
