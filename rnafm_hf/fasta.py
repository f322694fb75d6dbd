"""FASTA input, read with `dnaio` (fast, handles compressed files, reports malformed input by line), and what the
commands that read it share: file names from ids and reports of letters outside an alphabet."""

from __future__ import annotations

import codecs
import contextlib
import importlib
import lzma
import os
import re
import sys
import zlib
from collections.abc import Sequence
from typing import BinaryIO

import dnaio
from xopen import xopen  # dnaio's own opener: plain, gzip, bzip2, xz and zstd files, and `-` for stdin

UNSAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")
MAX_STEM = 100
MAX_LISTED_LETTERS = 5
STDIN = "-"


def _decompression_errors() -> tuple[type[Exception], ...]:
    """What the decompressors xopen may use raise on damaged data; they share no base class. EOFError: the
    stream ends before its end marker (a truncated download)."""
    errors: list[type[Exception]] = [EOFError, zlib.error, lzma.LZMAError]
    for module, name in (
        ("isal.isal_zlib", "error"),
        ("zlib_ng.zlib_ng", "error"),
        ("compression.zstd", "ZstdError"),
        ("backports.zstd", "ZstdError"),
    ):
        with contextlib.suppress(ImportError):
            errors.append(getattr(importlib.import_module(module), name))
    return tuple(errors)


DECOMPRESSION_ERRORS = _decompression_errors()


class FastaError(ValueError):
    """Input that cannot be read as FASTA text; the message names the file and, where known, the line."""


def read_fasta(path: str | os.PathLike | BinaryIO, name: str | None = None) -> list[tuple[str, str]]:
    """
    `(id, sequence)` for every record of a FASTA file (plain or compressed: .gz, .bz2, .xz, and .zst where
    Python reads zstd; recognised by name or content), of standard input when `path` is `-` (compressed too), or
    of a binary stream; the id is the header's first word. Text is read as UTF-8; a byte-order mark at the start
    is skipped.

    Input that cannot be read raises one line naming the file (or `name`) and, where known, the line:
    `FastaError` (a `ValueError`) for malformed FASTA, bytes that are not UTF-8, or a damaged or truncated
    compressed file; an `OSError` of the same kind (`FileNotFoundError`, `IsADirectoryError`, `PermissionError`)
    when the file cannot be opened or read.

    Example:

    ```python
    >>> import tempfile
    >>> from pathlib import Path
    >>> path = Path(tempfile.mkdtemp()) / "two.fasta"
    >>> _ = path.write_text(">first RNA\\nACGU\\nUU\\n>second\\nGGC\\n")
    >>> read_fasta(path)
    [('first', 'ACGUUU'), ('second', 'GGC')]

    ```
    """
    if hasattr(path, "read"):
        source, label, rereadable = path, name or getattr(path, "name", "the input"), False
    elif os.fspath(path) == STDIN:
        source, label, rereadable = sys.stdin.buffer, name or "standard input", False
    else:
        source, label, rereadable = path, name or os.fspath(path), True
    try:
        stream = xopen(source, "rb", threads=0)  # as dnaio opens files: no helper process
        try:
            _skip_byte_order_mark(stream)
            with dnaio.open(stream, fileformat="fasta") as records:
                return [(record.id, record.sequence) for record in records]
        finally:
            if stream is not source:  # a stream given (stdin too) is the caller's to close
                stream.close()
    except dnaio.exceptions.FileFormatError as error:
        raise FastaError(f"{label}: not a valid FASTA file. {error}") from error
    except UnicodeDecodeError as error:
        byte = error.object[error.start : error.start + 1].hex()
        where = _first_undecodable_line(path) if rereadable else ""
        raise FastaError(
            f"{label}: {where}byte 0x{byte} is not UTF-8; FASTA is read as UTF-8 text."
        ) from error
    except DECOMPRESSION_ERRORS as error:
        raise FastaError(f"{label}: damaged or truncated compressed file ({error}).") from error
    except OSError as error:
        if error.errno is None:  # bz2's "Invalid data stream", gzip's BadGzipFile: the data, not the file
            raise FastaError(f"{label}: damaged or truncated compressed file ({error}).") from error
        named = type(error)(f"{label}: cannot be read: {error.strerror}")
        named.errno = error.errno
        raise named from error


def _skip_byte_order_mark(stream: BinaryIO) -> None:
    """Step over a UTF-8 byte-order mark, which some Windows editors write at the start of text files (dnaio would
    read it as part of the first line)."""
    if hasattr(stream, "peek"):
        head = stream.peek(len(codecs.BOM_UTF8))[: len(codecs.BOM_UTF8)]
    elif stream.seekable():
        start = stream.tell()
        head = stream.read(len(codecs.BOM_UTF8))
        stream.seek(start)
    else:
        return
    if head == codecs.BOM_UTF8:
        stream.read(len(codecs.BOM_UTF8))


def _first_undecodable_line(path: str | os.PathLike) -> str:
    """`"line N: "` for the first line of a file that is not UTF-8, read again to find it (only after an error)."""
    with xopen(path, "rb") as stream:
        for number, line in enumerate(stream, 1):
            try:
                line.decode()
            except UnicodeDecodeError:
                return f"line {number}: "
    return ""


def safe_stems(ids: Sequence[str]) -> list[str]:
    """File names from FASTA ids: letters, digits, `.`, `_` and `-` only, no leading dot, unique (also when the
    file system ignores case)."""
    stems, taken = [], set()
    for number, identifier in enumerate(ids, 1):
        stem = UNSAFE_NAME.sub("_", identifier).lstrip(".")[:MAX_STEM] or f"sequence_{number}"
        candidate, copy = stem, 1
        while candidate.lower() in taken:
            copy += 1
            candidate = f"{stem}_{copy}"
        taken.add(candidate.lower())
        stems.append(candidate)
    return stems


def unknown_letters(sequence: str, valid: str, k_mer: int = 1) -> str | None:
    """
    Where `sequence` holds letters outside `valid`, 1-based (with the codon for `k_mer=3`); None when nowhere.

    ```python
    >>> unknown_letters("ACXGU", "ACGU")
    "'X' at 3"
    >>> unknown_letters("AUGNCC", "ACGU", k_mer=3)
    "'N' at 4 (codon 2)"

    ```
    """
    if not sequence.strip(valid):  # one C-speed scan for clean input
        return None
    bad = [(n, char) for n, char in enumerate(sequence) if char not in valid]
    described = [
        f"{char!r} at {n + 1}" + (f" (codon {n // 3 + 1})" if k_mer == 3 else "")
        for n, char in bad[:MAX_LISTED_LETTERS]
    ]
    more = len(bad) - MAX_LISTED_LETTERS
    return ", ".join(described) + (f" and {more} more" if more > 0 else "")
