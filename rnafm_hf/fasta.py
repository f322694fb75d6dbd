"""FASTA input, read with `dnaio` (fast, handles compressed files, reports malformed input by line)."""

from __future__ import annotations

import os

import dnaio


def read_fasta(path: str | os.PathLike) -> list[tuple[str, str]]:
    """
    `(id, sequence)` for every record of a FASTA file (plain or compressed); the id is the header's first word.

    A malformed file raises `ValueError` naming the file and line.

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
        with dnaio.open(os.fspath(path), fileformat="fasta") as records:
            return [(record.id, record.sequence) for record in records]
    except dnaio.exceptions.FileFormatError as error:
        raise ValueError(f"{path}: not a valid FASTA file. {error}") from error
