"""FASTA input, read with `dnaio` (fast, handles compressed files, reports malformed input by line), and what the
commands that read it share: file names from ids and reports of letters outside an alphabet."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from typing import BinaryIO

import dnaio

UNSAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")
MAX_STEM = 100
MAX_LISTED_LETTERS = 5


def read_fasta(path: str | os.PathLike | BinaryIO, name: str | None = None) -> list[tuple[str, str]]:
    """
    `(id, sequence)` for every record of a FASTA file (plain or compressed) or binary stream; the id is the
    header's first word.

    A malformed file raises `ValueError` naming the file (or `name`) and line.

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
    try:
        source = path if hasattr(path, "read") else os.fspath(path)
        with dnaio.open(source, fileformat="fasta") as records:
            return [(record.id, record.sequence) for record in records]
    except dnaio.exceptions.FileFormatError as error:
        raise ValueError(f"{name or path}: not a valid FASTA file. {error}") from error


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
