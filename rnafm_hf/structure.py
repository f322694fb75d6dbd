"""
RNA secondary structures: reading a structure off a pairing-probability map as the original RNA-FM prediction
script does, the `.ct`, `.bpseq` and dot-bracket formats, and base-pair scores against a known structure.

Pairs are 0-based `(i, j)` with `i < j` in Python; the files number bases from 1, as the formats define.

Example:

```python
>>> from rnafm_hf.structure import SecondaryStructure, base_pair_metrics
>>> known = SecondaryStructure.from_dot_bracket("GGGAAACCC", "(((...)))")
>>> known.pairs
((0, 8), (1, 7), (2, 6))
>>> predicted = SecondaryStructure("GGGAAACCC", [(0, 8), (1, 7)])
>>> predicted.to_dot_bracket()
'((.....))'
>>> round(base_pair_metrics(predicted, known).f1, 3)
0.8

```
"""

from __future__ import annotations

import math
import os
import string
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .configuration_rnafm import RnaFmConfig
from .options import STRUCTURE_FORMATS

# The threshold the original prediction script applies to the PDB-All head's probabilities.
DEFAULT_THRESHOLD: float = RnaFmConfig.ss_threshold
CANONICAL_PAIRS = frozenset({"AU", "UA", "GC", "CG", "GU", "UG"})
# Pseudoknot levels, outermost first: the usual four bracket kinds, then letters (Aa, Bb, ...).
BRACKETS = ["()", "[]", "{}", "<>"] + [
    upper + lower for upper, lower in zip(string.ascii_uppercase, string.ascii_lowercase, strict=True)
]
_OPENING = {pair[0]: level for level, pair in enumerate(BRACKETS)}
_CLOSING = {pair[1]: level for level, pair in enumerate(BRACKETS)}
FORMATS = STRUCTURE_FORMATS
_SUFFIXES = {".ct": "ct", ".bpseq": "bpseq", ".dbn": "dbn", ".db": "dbn", ".dot": "dbn"}


@dataclass(frozen=True)
class SecondaryStructure:
    """
    A sequence and its base pairs, each base in at most one pair.

    `pairs` may be given in any order and orientation; they are stored sorted as 0-based `(i, j)` with `i < j`.
    Pairs that leave the sequence, pair a base with itself, or use a base twice raise a `ValueError` naming the
    positions (1-based, as the files count).
    """

    sequence: str
    pairs: tuple[tuple[int, int], ...] = ()
    name: str = ""

    def __post_init__(self) -> None:
        length = len(self.sequence)
        for i, j in self.pairs:
            if i == j or not (0 <= i < length and 0 <= j < length) or int(i) != i or int(j) != j:
                raise ValueError(
                    f"{self._label()}({i}, {j}) is not a pair of two bases of the {length}-nt sequence "
                    f"(0-based positions)."
                )
        normalised = sorted((min(int(i), int(j)), max(int(i), int(j))) for i, j in self.pairs)
        partner: dict[int, int] = {}
        for i, j in normalised:
            for base, other in ((i, j), (j, i)):
                if base in partner:
                    raise ValueError(
                        f"{self._label()}base {base + 1} is paired twice (with {partner[base] + 1} and {other + 1})."
                    )
                partner[base] = other
        object.__setattr__(self, "pairs", tuple(normalised))

    def _label(self) -> str:
        return f"{self.name}: " if self.name else ""

    @property
    def pair_table(self) -> list[int]:
        """The partner of each base (0-based), -1 where unpaired."""
        table = [-1] * len(self.sequence)
        for i, j in self.pairs:
            table[i], table[j] = j, i
        return table

    # Dot-bracket ------------------------------------------------------------------------------------------------

    def pseudoknot_levels(self) -> dict[tuple[int, int], int]:
        """Each pair's bracket level: 0 for the pairs of the first nested layer, 1 for those crossing it, and so on
        (pairs taken in order, each in the first level it crosses nothing of); no limit on the number of levels."""
        levels: list[list[tuple[int, int]]] = []
        level_of: dict[tuple[int, int], int] = {}
        for pair in self.pairs:
            number = next(
                (n for n, level in enumerate(levels) if not any(_cross(pair, other) for other in level)),
                len(levels),
            )
            if number == len(levels):
                levels.append([])
            levels[number].append(pair)
            level_of[pair] = number
        return level_of

    def to_dot_bracket(self) -> str:
        """Dot-bracket notation; crossing pairs (pseudoknots) get `[]`, `{}`, `<>`, then `Aa`, `Bb`, ..."""
        level_of = self.pseudoknot_levels()
        if level_of and max(level_of.values()) >= len(BRACKETS):
            raise ValueError(
                f"{self._label()}more than {len(BRACKETS)} pseudoknot levels, which dot-bracket cannot write "
                "(.ct and .bpseq write any structure)."
            )
        symbols = ["."] * len(self.sequence)
        for (i, j), level in level_of.items():
            symbols[i], symbols[j] = BRACKETS[level]
        return "".join(symbols)

    @classmethod
    def from_dot_bracket(cls, sequence: str, dot_bracket: str, name: str = "") -> SecondaryStructure:
        """Parse dot-bracket notation (any of `()`, `[]`, `{}`, `<>`, `Aa`...; `.` for unpaired bases)."""
        label = f"{name}: " if name else ""
        if len(dot_bracket) != len(sequence):
            raise ValueError(
                f"{label}the dot-bracket string has {len(dot_bracket)} characters, the sequence {len(sequence)}."
            )
        stacks: dict[int, list[int]] = {}
        pairs = []
        for position, symbol in enumerate(dot_bracket):
            if symbol == ".":
                continue
            if symbol in _OPENING:
                stacks.setdefault(_OPENING[symbol], []).append(position)
            elif symbol in _CLOSING:
                stack = stacks.get(_CLOSING[symbol])
                if not stack:
                    raise ValueError(f"{label}{symbol!r} at position {position + 1} closes nothing.")
                pairs.append((stack.pop(), position))
            else:
                raise ValueError(
                    f"{label}unknown symbol {symbol!r} at position {position + 1}; use '.' and brackets."
                )
        unclosed = sorted(p for stack in stacks.values() for p in stack)
        if unclosed:
            raise ValueError(
                f"{label}{dot_bracket[unclosed[0]]!r} at position {unclosed[0] + 1} is never closed "
                f"({len(unclosed)} unclosed in all)."
            )
        return cls(sequence, pairs, name)

    # CT and BPSEQ -----------------------------------------------------------------------------------------------

    def to_ct(self) -> str:
        """
        Connectivity table in the column layout of the original RNA-FM script: a `length<TAB>name` header, then per
        base its number, letter, previous and next number (the last base's next is `length + 1`, as the original
        writes it), partner (0 for none) and number again, tab-separated.
        """
        table = self.pair_table
        lines = [f"{len(self.sequence)}\t{self.name}"]
        lines += [
            f"{n}\t{base}\t{n - 1}\t{n + 1}\t{table[n - 1] + 1}\t{n}"
            for n, base in enumerate(self.sequence, 1)
        ]
        return "\n".join(lines) + "\n"

    @classmethod
    def from_ct(cls, text: str, name: str | None = None) -> SecondaryStructure:
        """Parse a connectivity table holding one structure (the header's title becomes the name)."""
        lines = [line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
        if not lines:
            raise ValueError("The CT text is empty.")
        header = lines[0].split(maxsplit=1)
        if not header[0].isdigit():
            raise ValueError(f"The CT header {lines[0]!r} does not start with the number of bases.")
        length = int(header[0])
        title = name if name is not None else (header[1].strip() if len(header) > 1 else "")
        body = lines[1 : 1 + length]
        if len(lines) > 1 + length:
            raise ValueError(
                f"{title or 'CT'}: {len(lines) - 1 - length} lines follow the {length} bases the header announces; "
                "files with several structures are not read, split them first."
            )
        sequence, partners = _read_columns(body, length, base_column=1, partner_column=4, label=title or "CT")
        return cls(sequence, _pairs_from_partners(partners, title), title)

    def to_bpseq(self) -> str:
        """BPSEQ: per base its number, letter and partner (0 for none), space-separated."""
        table = self.pair_table
        return "".join(f"{n} {base} {table[n - 1] + 1}\n" for n, base in enumerate(self.sequence, 1))

    @classmethod
    def from_bpseq(cls, text: str, name: str = "") -> SecondaryStructure:
        """Parse BPSEQ (comment and header lines such as bpRNA's `#Name: ...` are skipped)."""
        lines = [line for line in text.splitlines() if line.strip() and line.split()[0].isdigit()]
        if not lines:
            raise ValueError(f"{name or 'BPSEQ'}: no base lines (`number base partner`) found.")
        sequence, partners = _read_columns(
            lines, len(lines), base_column=1, partner_column=2, label=name or "BPSEQ"
        )
        return cls(sequence, _pairs_from_partners(partners, name), name)

    # Files ------------------------------------------------------------------------------------------------------

    def to_text(self, format: str) -> str:
        """The structure in `format` (`ct`, `bpseq` or `dbn`: a `>name` line, the sequence, the dot-bracket)."""
        format = format.lower()
        if format == "ct":
            return self.to_ct()
        if format == "bpseq":
            return self.to_bpseq()
        if format == "dbn":
            return f">{self.name}\n{self.sequence}\n{self.to_dot_bracket()}\n"
        raise ValueError(f"Unknown structure format {format!r}; choose one of {', '.join(FORMATS)}.")

    def write(self, path: str | os.PathLike, format: str | None = None) -> Path:
        """Write the structure; the format defaults to the file's suffix (`.ct`, `.bpseq`, `.dbn`/`.db`)."""
        path = Path(path)
        path.write_text(self.to_text(format or _format_of(path)), encoding="utf-8")
        return path

    @classmethod
    def read(cls, path: str | os.PathLike, format: str | None = None) -> SecondaryStructure:
        """Read a structure file; the format defaults to the file's suffix."""
        path = Path(path)
        format = (format or _format_of(path)).lower()
        text = path.read_text(
            encoding="utf-8-sig"
        )  # a byte-order mark, as some editors write, is not a header
        try:
            if format == "ct":
                structure = cls.from_ct(text)
                return structure if structure.name else cls(structure.sequence, structure.pairs, path.stem)
            if format == "bpseq":
                return cls.from_bpseq(text, name=path.stem)
            if format == "dbn":
                return _from_dbn_text(text, default_name=path.stem)
        except ValueError as error:
            raise ValueError(f"{path}: {error}") from error
        raise ValueError(f"Unknown structure format {format!r}; choose one of {', '.join(FORMATS)}.")


def _cross(a: tuple[int, int], b: tuple[int, int]) -> bool:
    return a[0] < b[0] < a[1] < b[1] or b[0] < a[0] < b[1] < a[1]


def _format_of(path: Path) -> str:
    if path.suffix.lower() not in _SUFFIXES:
        raise ValueError(
            f"Cannot tell the format of {path} from its suffix; pass format= ({', '.join(FORMATS)})."
        )
    return _SUFFIXES[path.suffix.lower()]


def _read_columns(
    lines: list[str], length: int, base_column: int, partner_column: int, label: str
) -> tuple[str, list[int]]:
    if len(lines) != length:
        raise ValueError(f"{label}: {length} bases announced, {len(lines)} lines found.")
    bases, partners = [], []
    for number, line in enumerate(lines, 1):
        fields = line.split()
        try:
            if int(fields[0]) != number:
                raise ValueError
            bases.append(fields[base_column])
            partners.append(int(fields[partner_column]))
        except (ValueError, IndexError):
            raise ValueError(f"{label}: cannot read the line of base {number}: {line!r}.") from None
    return "".join(bases), partners


def _pairs_from_partners(partners: list[int], label: str) -> list[tuple[int, int]]:
    pairs = []
    for i, partner in enumerate(partners, 1):
        if partner == 0:
            continue
        if partner == i or not 1 <= partner <= len(partners) or partners[partner - 1] != i:
            raise ValueError(
                f"{label + ': ' if label else ''}base {i} names {partner} as its partner, but base {partner} "
                f"does not name {i}."
            )
        if i < partner:
            pairs.append((i - 1, partner - 1))
    return pairs


def _from_dbn_text(text: str, default_name: str = "") -> SecondaryStructure:
    name, rows = default_name, []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith(">"):
            if rows:
                raise ValueError("the file holds several structures; write one per file.")
            name = line[1:].strip()
        elif line and not line.startswith("#"):
            rows.append(line.split()[0])  # RNAfold appends the energy: "((..)) (-1.20)"
    if len(rows) != 2:
        raise ValueError(f"expected a sequence line and a dot-bracket line, found {len(rows)} lines.")
    return SecondaryStructure.from_dot_bracket(rows[0], rows[1], name)


# Reading a structure off the probabilities ------------------------------------------------------------------------


@dataclass
class FoldedStructure:
    """A structure read off a pairing-probability map, with the candidate pairs it had to reject."""

    structure: SecondaryStructure
    multiplets: list[tuple[int, int]] = field(default_factory=list)
    """Candidate pairs above the threshold rejected because one of their bases was already paired with a more
    probable partner (0-based, in the order they were met, most probable first)."""


def fold_probabilities(
    probabilities: np.ndarray | Iterable,
    sequence: str,
    threshold: float = DEFAULT_THRESHOLD,
    canonical_only: bool = False,
    min_loop: int = 1,
    name: str = "",
) -> FoldedStructure:
    """
    Read a structure off an (L, L) pairing-probability map as the original RNA-FM prediction script does: pairs
    above `threshold` (the diagonal never) are visited from the most probable down; a pair enclosing fewer than
    `min_loop` bases (the original: `|i - j| <= 1` skipped) or, with `canonical_only`, other than AU, UA, GC, CG,
    GU, UG is skipped; a pair is kept when neither base is paired yet, otherwise it is reported as a multiplet.

    The map is read from its upper triangle (the model's maps are symmetric). The 2022 version of the script
    corresponds to `threshold=0.5, canonical_only=True, min_loop=0`.

    Ties are common: float32's sigmoid gives exactly 1.0 for every logit above about 17. Equal probabilities are
    visited in order of position (by `i`, then by `j`), so the structure is deterministic and every base has at
    most one partner. The original script differs there: it sorts all entries above the threshold of the whole
    map, both triangles, with numpy's default (unstable) sort, so tied pairs come in an order that depends on the
    sort's internals; and it tracks paired rows and paired columns apart, so among ties a base can be kept twice,
    once as the row of one pair and once as the column of another. Where no probabilities tie, the two agree.

    Example:

    ```python
    >>> import numpy as np
    >>> p = np.zeros((6, 6)); p[0, 5] = p[5, 0] = 0.9; p[1, 5] = p[5, 1] = 0.8; p[1, 4] = p[4, 1] = 0.7
    >>> folded = fold_probabilities(p, "GGAACC")
    >>> folded.structure.to_dot_bracket(), folded.multiplets
    ('((..))', [(1, 5)])

    ```
    """
    if hasattr(probabilities, "detach"):  # a torch tensor, on any device and in any precision
        probabilities = probabilities.detach().float().cpu().numpy()
    probabilities = np.asarray(probabilities, dtype=np.float64)  # the original compares in float64
    length = len(sequence)
    if probabilities.shape != (length, length):
        raise ValueError(
            f"{name + ': ' if name else ''}the probability map is {probabilities.shape}, the sequence has {length} nt."
        )
    if min_loop < 0:
        raise ValueError(f"min_loop must be 0 or more, got {min_loop}.")
    rows, columns = np.triu_indices(length, k=min_loop + 1)
    values = probabilities[rows, columns]
    keep = values > threshold
    if canonical_only:
        upper = sequence.upper().replace("T", "U")
        keep &= np.array(
            [upper[i] + upper[j] in CANONICAL_PAIRS for i, j in zip(rows, columns, strict=True)], dtype=bool
        )
    rows, columns, values = rows[keep], columns[keep], values[keep]
    paired = np.zeros(length, dtype=bool)
    pairs, multiplets = [], []
    for index in np.lexsort((columns, rows, -values)):
        i, j = int(rows[index]), int(columns[index])
        if paired[i] or paired[j]:
            multiplets.append((i, j))
        else:
            paired[i] = paired[j] = True
            pairs.append((i, j))
    return FoldedStructure(SecondaryStructure(sequence, pairs, name), multiplets)


# Scores ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PairMetrics:
    """Base-pair scores of a predicted structure against a known one."""

    precision: float
    recall: float
    f1: float
    mcc: float
    true_positives: int
    false_positives: int
    false_negatives: int


def base_pair_metrics(
    predicted: SecondaryStructure, reference: SecondaryStructure, allow_shift: bool = False
) -> PairMetrics:
    """
    Precision, recall, F1 and Matthews correlation over base pairs. With `allow_shift`, a predicted pair (i, j)
    also counts as right when (i +- 1, j) or (i, j +- 1) is a reference pair, and a reference pair counts as found
    when such a neighbour was predicted (each side is judged on its own, so two shifted predictions may both
    count against one reference pair). The true negatives of the MCC are all other base pairs, L (L - 1) / 2 in
    all. A score whose denominator is zero is 0.
    """
    if len(predicted.sequence) != len(reference.sequence):
        raise ValueError(
            f"The predicted structure has {len(predicted.sequence)} bases, the reference {len(reference.sequence)}."
        )
    found, known = set(predicted.pairs), set(reference.pairs)

    def matches(pair: tuple[int, int], pool: set[tuple[int, int]]) -> bool:
        if pair in pool:
            return True
        i, j = pair
        return allow_shift and any(p in pool for p in ((i - 1, j), (i + 1, j), (i, j - 1), (i, j + 1)))

    true_positives = sum(matches(pair, known) for pair in found)
    false_positives = len(found) - true_positives
    false_negatives = sum(not matches(pair, found) for pair in known)
    length = len(reference.sequence)
    true_negatives = length * (length - 1) // 2 - true_positives - false_positives - false_negatives
    precision = _ratio(true_positives, true_positives + false_positives)
    recall = _ratio(len(known) - false_negatives, len(known))
    f1 = _ratio(2 * precision * recall, precision + recall)
    denominator = math.sqrt(
        (true_positives + false_positives)
        * (true_positives + false_negatives)
        * (true_negatives + false_positives)
        * (true_negatives + false_negatives)
    )
    mcc = _ratio(true_positives * true_negatives - false_positives * false_negatives, denominator)
    return PairMetrics(precision, recall, f1, mcc, true_positives, false_positives, false_negatives)


def _ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator else 0.0


__all__ = [
    "BRACKETS",
    "CANONICAL_PAIRS",
    "DEFAULT_THRESHOLD",
    "FORMATS",
    "FoldedStructure",
    "PairMetrics",
    "SecondaryStructure",
    "base_pair_metrics",
    "fold_probabilities",
]
