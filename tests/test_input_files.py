"""FASTA input files as `read_fasta`, `rnafm-hf embed` and `rnafm-hf fold` meet them: `-` reads standard input, a
byte-order mark is skipped, and a file that cannot be read (not UTF-8, truncated, a folder, unreadable, missing)
gives one line naming it, and exit status 1 rather than a traceback."""

from __future__ import annotations

import builtins
import bz2
import errno
import gzip
import io
import lzma
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from original_checkpoints import write_secondary_structure_checkpoint

from rnafm_hf import load_embeddings
from rnafm_hf.cli import main
from rnafm_hf.conversion import convert_checkpoint
from rnafm_hf.fasta import read_fasta

HAIRPIN = "GGGUGCGAUCAUACCAGCACUAAUGCCCUCCUGGGAAGUCCUCGUGUUGCACCCCU"
TWO = f">hairpin RNA\n{HAIRPIN}\n>short\nACGUACGU\n"
RECORDS = [("hairpin", HAIRPIN), ("short", "ACGUACGU")]


@pytest.fixture(scope="module")
def ss_folder(tmp_path_factory) -> Path:
    """A tiny converted secondary-structure folder, for `rnafm-hf fold`."""
    checkpoint = write_secondary_structure_checkpoint(
        tmp_path_factory.mktemp("ss") / "RNA-FM-ResNet_PDB-All.pth"
    )
    backbone = checkpoint.parent / f"{checkpoint.stem}-backbone" / "RNA-FM_pretrained.pth"
    return convert_checkpoint(
        checkpoint, checkpoint.parent / "rna-fm-ss", backbone=backbone, verify=False
    ).output_dir


def truncated(compress):
    """A FASTA file compressed with `compress` and cut in half, as an interrupted download leaves it."""
    data = compress((">a\n" + "ACGU" * 5000 + "\n").encode())
    return data[: len(data) // 2]


def unreadable(path: Path, monkeypatch) -> None:
    """A file its reader may not open: mode 000, and since root opens that anyway, an `open` that refuses it as
    the system refuses other users."""
    path.write_text(TWO)
    path.chmod(0)
    if os.access(path, os.R_OK):
        real_open = builtins.open

        def refusing_open(file, *args, **kwargs):
            if isinstance(file, (str, os.PathLike)) and os.fspath(file) == os.fspath(path):
                raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), os.fspath(file))
            return real_open(file, *args, **kwargs)

        monkeypatch.setattr(builtins, "open", refusing_open)


# name: (file name, how to make it, what the message says after the file name)
BAD_INPUTS = {
    "latin-1 header": ("latin1.fasta", lambda p, _: p.write_bytes(b">caf\xe9\nACGU\n"), "line 1: byte 0xe9 is not UTF-8"),
    "binary garbage": ("garbage.fasta", lambda p, _: p.write_bytes(bytes(range(256)) * 4), "line 2: byte 0x80 is not UTF-8"),
    "truncated .gz": ("cut.fasta.gz", lambda p, _: p.write_bytes(truncated(gzip.compress)), "damaged or truncated compressed file"),
    "truncated .bz2": ("cut.fasta.bz2", lambda p, _: p.write_bytes(truncated(bz2.compress)), "damaged or truncated compressed file"),
    "truncated .xz": ("cut.fasta.xz", lambda p, _: p.write_bytes(truncated(lzma.compress)), "damaged or truncated compressed file"),
    "directory": ("folder.fasta", lambda p, _: p.mkdir(), "cannot be read: Is a directory"),
    "unreadable": ("locked.fasta", unreadable, "cannot be read: Permission denied"),
    "missing": ("missing.fasta", lambda p, _: None, "cannot be read: No such file or directory"),
}  # fmt: skip
# embed checks that the input is a file before reading it, and says so in its own words.
EMBED_NAMES_FIRST = ("directory", "missing")


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_an_unreadable_input_is_one_line_naming_the_file(
    case, saved_folder, ss_folder, tmp_path, monkeypatch, capsys
):
    name, make, says = BAD_INPUTS[case]
    path = tmp_path / name
    make(path, monkeypatch)
    with pytest.raises((ValueError, OSError)) as raised:
        read_fasta(path)
    assert str(raised.value).startswith(f"{path}: {says}") and "\n" not in str(raised.value)

    for command, model in (("embed", saved_folder), ("fold", ss_folder)):
        status = main([command, str(path), "--model", str(model), "-o", str(tmp_path / f"out-{command}")])
        error = capsys.readouterr().err
        assert status != 0 and "Traceback" not in error
        naming = [line for line in error.splitlines() if str(path) in line]
        assert len(naming) == 1 and naming[0].startswith(f"rnafm-hf {command}: error: "), error
        if case == "missing":  # the command checks its input file before loading anything
            assert naming[0] == f"rnafm-hf {command}: error: no such FASTA file: {path}"
        elif command == "fold" or case not in EMBED_NAMES_FIRST:
            assert says in naming[0]


def test_a_byte_order_mark_is_skipped(saved_folder, ss_folder, tmp_path, capsys):
    path = tmp_path / "windows.fasta"
    path.write_bytes(b"\xef\xbb\xbf" + TWO.replace("\n", "\r\n").encode())
    assert read_fasta(path) == RECORDS
    assert read_fasta(io.BytesIO(b"\xef\xbb\xbf" + TWO.encode()), name="pasted") == RECORDS
    assert main(["embed", str(path), "--model", str(saved_folder), "-o", str(tmp_path / "embeddings")]) == 0
    assert list(load_embeddings(tmp_path / "embeddings")) == ["hairpin", "short"]
    assert main(["fold", str(path), "--model", str(ss_folder), "-o", str(tmp_path / "structures")]) == 0
    assert (tmp_path / "structures" / "hairpin.ct").is_file()
    capsys.readouterr()


def test_standard_input_is_read_for_a_dash(monkeypatch):
    """In-process: `-` reads `sys.stdin`'s bytes, plain or compressed, and names it in errors."""
    for data in (TWO.encode(), gzip.compress(TWO.encode())):
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))
        assert read_fasta("-") == RECORDS
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b">caf\xe9\nACGU\n")))
    with pytest.raises(ValueError, match=r"^standard input: byte 0xe9 is not UTF-8"):
        read_fasta("-")


@pytest.mark.slow
def test_embed_reads_standard_input(saved_folder, tmp_path):
    """`rnafm-hf embed -` in its own process, the FASTA piped in: the arrays of the same file embedded."""
    fasta = tmp_path / "two.fasta"
    fasta.write_text(TWO)
    assert main(["embed", str(fasta), "--model", str(saved_folder), "-o", str(tmp_path / "from-file")]) == 0
    command = [sys.executable, "-m", "rnafm_hf", "embed", "-", "--model", str(saved_folder), "-o"]
    done = subprocess.run(
        [*command, str(tmp_path / "from-stdin")], input=TWO.encode(), capture_output=True, timeout=300
    )
    assert done.returncode == 0, done.stderr.decode()
    from_file, from_stdin = load_embeddings(tmp_path / "from-file"), load_embeddings(tmp_path / "from-stdin")
    assert list(from_stdin) == list(from_file) == ["hairpin", "short"]
    for identifier in from_file:
        np.testing.assert_array_equal(from_stdin[identifier], from_file[identifier])
