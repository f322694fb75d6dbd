"""
The one set of input rules that `embed`, `fold`, the structure pipeline and the web app share: records are read
the same way and every record that cannot be used is listed (number, id and why, with positions) before any
compute.

```python
>>> from rnafm_hf import RnaFmTokenizer
>>> from rnafm_hf.records import InputRules, read_inputs
>>> rules = InputRules.of(RnaFmTokenizer(), max_tokens=1022)
>>> valid, invalid = rules.check(read_inputs([("a", "acgu"), ("a", "GGAC"), ("c", ""), ("d", "GGXC")]))
>>> [record.sequence for record in valid]
['ACGU']
>>> for item in invalid:
...     print(item)
record 2 ('a'): duplicate id (first at record 1)
record 3 ('c'): empty sequence
record 4 ('d'): letters outside the model's alphabet (A C G U R Y K M S W B D H V N -): 'X' at 3

```
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from .fasta import read_fasta, unknown_letters

MAX_LISTED = 20
# safetensors reserves this tensor name; ids become tensor names in embed's shards.
RESERVED_IDS = ("__metadata__",)


@dataclass(frozen=True)
class SequenceRecord:
    """One input sequence: its id, its 1-based number in the input, and its text (whitespace removed)."""

    id: str
    sequence: str
    number: int


@dataclass(frozen=True)
class InvalidRecord:
    """An input that cannot be used, and why."""

    number: int
    id: str
    reason: str

    def __str__(self) -> str:
        return f"record {self.number} ({self.id!r}): {self.reason}"


class InvalidSequencesError(ValueError):
    """Raised before any compute when inputs cannot be used; `.invalid` lists them all."""

    def __init__(
        self,
        invalid: Sequence[InvalidRecord],
        action: str = "embedded",
        remedy: str = "skip them with skip_invalid=True",
    ):
        self.invalid = list(invalid)
        listed = "\n".join(f"  {item}" for item in self.invalid[:MAX_LISTED])
        more = f"\n  ... and {len(self.invalid) - MAX_LISTED} more" if len(self.invalid) > MAX_LISTED else ""
        super().__init__(
            f"{len(self.invalid)} input record(s) cannot be {action}:\n{listed}{more}\n"
            + (
                f"Fix them, or {remedy}; skipped records are listed."
                if remedy.startswith("skip")
                else f"{remedy}."
            )
        )


def read_inputs(
    inputs: str | os.PathLike | Mapping[str, str] | Iterable[str | tuple[str, str]],
) -> list[SequenceRecord]:
    """
    Records from a FASTA path (plain or compressed; `-` is standard input), a `{id: sequence}` mapping, or an
    iterable of sequences (ids `"0"`, `"1"`, ...) or `(id, sequence)` pairs. Whitespace inside a sequence is
    removed.
    """
    if isinstance(inputs, (str, os.PathLike)):
        if (
            isinstance(inputs, str)
            and re.fullmatch(r"[A-Za-z][A-Za-z-]*", inputs)
            and not Path(inputs).exists()
        ):
            raise FileNotFoundError(
                f"No FASTA file {inputs!r}. To pass a sequence itself, pass a list: ['ACGU...']."
            )
        pairs: Iterable = read_fasta(inputs)  # it names the file and what is wrong with it
    elif isinstance(inputs, Mapping):
        pairs = inputs.items()
    else:
        pairs = ((str(n), item) if isinstance(item, str) else item for n, item in enumerate(inputs))
    records = []
    for number, pair in enumerate(pairs, 1):
        if not (isinstance(pair, (tuple, list)) and len(pair) == 2):
            raise ValueError(
                f"Input {number} is {pair!r}: expected a sequence string or an (id, sequence) pair."
            )
        identifier, sequence = pair
        records.append(SequenceRecord(str(identifier), "".join(str(sequence).split()), number))
    return records


@dataclass(frozen=True)
class InputRules:
    """What a model accepts: letters (after the tokenizer's normalisation: upper case, T as U), whole codons for
    mRNA-FM, and at most `max_tokens` residues unless long sequences are handled (`allow_long`)."""

    normalise: Callable[[str], str]
    valid_letters: str
    k_mer: int
    max_tokens: int
    allow_long: bool = False
    long_remedy: str = "use long='truncate' or long='window'"

    @classmethod
    def of(cls, tokenizer, max_tokens: int, **options) -> InputRules:
        """The rules of an RNA-FM tokenizer (`RnaFmTokenizer` or `RnaFmCodonTokenizer`)."""
        return cls(
            tokenizer._normalise_letters, tokenizer.valid_letters, tokenizer.k_mer, max_tokens, **options
        )

    def reason(self, identifier: str, sequence: str) -> str | None:
        """Why a (normalised) sequence cannot be used, or None; duplicates are `check`'s to find."""
        if not identifier:
            return "the header has no id"
        if any(char in identifier for char in "\t\n\r") or identifier in RESERVED_IDS:
            return "ids may not hold tabs or line breaks, nor be __metadata__ (reserved by safetensors)"
        if not sequence:
            return "empty sequence"
        if self.k_mer == 3 and len(sequence) % 3:
            return (
                f"length {len(sequence)} is not a multiple of 3 (remainder {len(sequence) % 3}); mRNA-FM reads "
                "whole codons from the first nucleotide"
            )
        if unknown := unknown_letters(sequence, self.valid_letters, self.k_mer):
            return f"letters outside the model's alphabet ({' '.join(self.valid_letters)}): {unknown}"
        if not self.allow_long and len(sequence) // self.k_mer > self.max_tokens:
            unit = "codons" if self.k_mer == 3 else "nt"
            return (
                f"{len(sequence) // self.k_mer} {unit}, longer than the {self.max_tokens} {unit} the model "
                f"reads; {self.long_remedy}"
            )
        return None

    def check(self, records: Sequence[SequenceRecord]) -> tuple[list[SequenceRecord], list[InvalidRecord]]:
        """Split records into those that can be used (normalised) and those that cannot, with reasons."""
        valid, invalid, seen = [], [], {}
        for record in records:
            sequence = self.normalise(record.sequence)
            reason = self.reason(record.id, sequence)
            if reason is None and record.id in seen:
                reason = f"duplicate id (first at record {seen[record.id]})"
            seen.setdefault(record.id, record.number)
            if reason is None:
                valid.append(SequenceRecord(record.id, sequence, record.number))
            else:
                invalid.append(InvalidRecord(record.number, record.id, reason))
        return valid, invalid


def checked(
    rules: InputRules,
    records: Sequence[SequenceRecord],
    skip_invalid: bool,
    log: Callable[[str], None] | None,
    action: str = "embedded",
    remedy: str = "skip them with skip_invalid=True",
) -> tuple[list[SequenceRecord], list[InvalidRecord]]:
    """The records to use and those skipped: invalid ones raise `InvalidSequencesError` unless `skip_invalid`,
    and so does an input with nothing left to use; skipped ones are logged."""
    if not records:
        raise ValueError("The input holds no sequences.")
    valid, invalid = rules.check(records)
    if not valid and skip_invalid:
        raise InvalidSequencesError(
            invalid, action, f"No record is left to be {action} once they are skipped"
        )
    if invalid and not skip_invalid:
        raise InvalidSequencesError(invalid, action, remedy)
    if log is not None:
        for item in invalid:
            log(f"Skipping {item}")
    return valid, invalid
