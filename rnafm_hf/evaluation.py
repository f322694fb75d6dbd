"""
Score predicted secondary structures against known ones: per structure precision, recall, F1 and MCC over base
pairs, and the F1 over crossed pairs (the pairs of pseudoknots), as RNAGym scores its structure benchmark; then
the means.

Structures are matched by id: a file's stem in a folder of `.ct` / `.bpseq` / `.dbn` files (a `fold` output
folder is one), or the `>id` of a multi-record dot-bracket file (`>id`, sequence, structure).

```python
>>> from rnafm_hf.evaluation import crossed_pairs
>>> from rnafm_hf.structure import SecondaryStructure
>>> sorted(crossed_pairs(SecondaryStructure.from_dot_bracket("GGAAACCUU", "((.....))")))
[]
>>> sorted(crossed_pairs(SecondaryStructure.from_dot_bracket("GGAAACCUU", "((.[[))]]")))
[(0, 6), (1, 5), (3, 8), (4, 7)]

```
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from .fasta import read_fasta
from .options import STRUCTURE_FORMATS
from .records import InvalidRecord, InvalidSequencesError
from .structure import _SUFFIXES, SecondaryStructure, base_pair_metrics

SCORE_COLUMNS = ("id", "length", "precision", "recall", "f1", "mcc", "crossed_pair_f1")
# A fold folder holds the same structure in each format; the first of these is read.
FORMAT_PREFERENCE = ("ct", "bpseq", "dbn")
# Every suffix the structure reader knows (.db and .dot are dot-bracket too).
SUFFIX_FORMATS = {suffix.lstrip("."): kind for suffix, kind in _SUFFIXES.items()}


@dataclass(frozen=True)
class StructureScore:
    """The scores of one predicted structure; `crossed_pair_f1` is None when the reference has no crossed pairs."""

    id: str
    length: int
    precision: float
    recall: float
    f1: float
    mcc: float
    crossed_pair_f1: float | None

    def row(self) -> list[str]:
        crossed = "" if self.crossed_pair_f1 is None else f"{self.crossed_pair_f1:.6f}"
        values = (self.precision, self.recall, self.f1, self.mcc)
        return [self.id, str(self.length), *(f"{value:.6f}" for value in values), crossed]


@dataclass
class Evaluation:
    """Scores of the structures found on both sides, with what was left out and why."""

    scores: list[StructureScore]
    invalid: list[InvalidRecord] = field(default_factory=list)
    missing_prediction: list[str] = field(default_factory=list)
    missing_reference: list[str] = field(default_factory=list)

    @property
    def means(self) -> dict[str, float]:
        """Means over the scored structures; the crossed-pair F1 over those whose reference has crossed pairs."""
        means = {
            name: _mean(getattr(score, name) for score in self.scores)
            for name in ("precision", "recall", "f1", "mcc")
        }
        means["crossed_pair_f1"] = _mean(
            score.crossed_pair_f1 for score in self.scores if score.crossed_pair_f1 is not None
        )
        return means

    def write_tsv(self, path: str | os.PathLike) -> Path:
        path = Path(path)
        lines = ["\t".join(SCORE_COLUMNS), *("\t".join(score.row()) for score in self.scores)]
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        return path


def _mean(values: Iterable[float]) -> float:
    values = list(values)
    return sum(values) / len(values) if values else math.nan


def crossed_pairs(structure: SecondaryStructure) -> set[tuple[int, int]]:
    """The pairs that cross at least one other pair (i < k < j < l): the pseudoknotted pairs."""
    pairs = sorted(structure.pairs)
    crossed = set()
    for index, (start, end) in enumerate(pairs):
        for inner_start, inner_end in pairs[index + 1 :]:
            if inner_start > end:
                break
            if inner_start < end < inner_end:
                crossed.update({(start, end), (inner_start, inner_end)})
    return crossed


def _f1(found: set, known: set) -> float:
    true = len(found & known)
    return 2 * true / (len(found) + len(known)) if true else 0.0


def score_structure(
    identifier: str, predicted: SecondaryStructure, reference: SecondaryStructure
) -> StructureScore:
    metrics = base_pair_metrics(predicted, reference)
    known_crossed = crossed_pairs(reference)
    crossed = _f1(crossed_pairs(predicted), known_crossed) if known_crossed else None
    return StructureScore(
        identifier,
        len(reference.sequence),
        metrics.precision,
        metrics.recall,
        metrics.f1,
        metrics.mcc,
        crossed,
    )


def read_structures(path: str | os.PathLike) -> tuple[dict[str, SecondaryStructure], list[InvalidRecord]]:
    """
    Structures by id, and the records that could not be read. A folder: every `.ct` / `.bpseq` / `.dbn` file, by
    stem (a stem in several formats, as `fold` writes them, is read from the first of ct, bpseq, dbn). A file: a
    multi-record dot-bracket file, `>id`, the sequence and the structure on the lines below.
    """
    structures, invalid, _ = _read_numbered(path)
    return structures, invalid


Numbered = tuple[dict[str, SecondaryStructure], list[InvalidRecord], dict[str, int]]


def _read_numbered(path: str | os.PathLike) -> Numbered:
    """`read_structures`, with each id's record number (its file's, in a folder sorted by name)."""
    path = Path(path)
    if path.is_dir():
        return _read_folder(path)
    if not path.is_file():
        raise FileNotFoundError(f"No such file or folder: {path}")
    if SUFFIX_FORMATS.get(path.suffix.lstrip(".").lower()) in ("ct", "bpseq"):
        raise ValueError(
            f"{path} is one {path.suffix} structure; give the folder that holds it (structures are matched by id "
            "across two folders), or a dot-bracket file of records (>id, sequence, structure)."
        )
    return _read_dot_bracket_records(path)


def _read_folder(folder: Path) -> Numbered:
    by_stem: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        kind = SUFFIX_FORMATS.get(path.suffix.lstrip(".").lower())
        if kind in STRUCTURE_FORMATS and (
            path.stem not in by_stem
            or FORMAT_PREFERENCE.index(kind)
            < FORMAT_PREFERENCE.index(SUFFIX_FORMATS[by_stem[path.stem].suffix[1:].lower()])
        ):
            by_stem[path.stem] = path
    if not by_stem:
        raise ValueError(f"{folder} holds no structure files ({', '.join(sorted(_SUFFIXES))}).")
    structures, invalid, numbers = {}, [], {}
    for number, (stem, path) in enumerate(sorted(by_stem.items()), 1):
        numbers[stem] = number
        try:
            structures[stem] = SecondaryStructure.read(path)
        except ValueError as error:
            invalid.append(InvalidRecord(number, stem, f"{folder.name}/{path.name}: {error}"))
    return structures, invalid, numbers


def _read_dot_bracket_records(path: Path) -> Numbered:
    structures, invalid, numbers = {}, [], {}
    for number, (identifier, text) in enumerate(_dot_bracket_records(path), 1):
        if not identifier:
            invalid.append(
                InvalidRecord(number, identifier, f"{path.name}: a record without an id ('>' alone)")
            )
            continue
        sequence, _, structure = text.partition("\n")
        structure = structure.split()[0] if structure.split() else ""  # RNAfold's energy after it, if any
        if identifier in numbers:
            invalid.append(InvalidRecord(number, identifier, f"{path.name}: duplicate id"))
            continue
        numbers[identifier] = number
        try:
            structures[identifier] = SecondaryStructure.from_dot_bracket(
                _normalised(sequence), structure.strip(), identifier
            )
        except ValueError as error:
            reason = str(error).removeprefix(f"{identifier}: ")
            invalid.append(InvalidRecord(number, identifier, f"{path.name}: {reason}"))
    return structures, invalid, numbers


def _dot_bracket_records(path: Path) -> list[tuple[str, str]]:
    """`(id, "sequence\\nstructure")` of each record; read as FASTA would read it, keeping the line break."""
    records, identifier, lines = [], None, []
    for line in path.read_text(encoding="utf-8-sig").splitlines():
        if line.startswith(">"):
            if identifier is not None:
                records.append((identifier, "\n".join(lines)))
            identifier, lines = line[1:].split()[0] if line[1:].split() else "", []
        elif line.strip() and not line.startswith("#"):
            lines.append(line.strip())
    if identifier is not None:
        records.append((identifier, "\n".join(lines)))
    if not records:
        read_fasta(path)  # says what is wrong with a file that is not FASTA-like at all
        raise ValueError(f"{path}: no records (`>id`, sequence, structure).")
    return records


def _normalised(sequence: str) -> str:
    return sequence.strip().upper().replace("T", "U")


def evaluate_structures(
    predicted: str | os.PathLike,
    reference: str | os.PathLike,
    *,
    skip_invalid: bool = False,
    log: Callable[[str], None] | None = None,
) -> Evaluation:
    """
    Score the structures of `predicted` (a folder, e.g. `fold`'s output) against those of `reference` (a folder or
    a multi-record dot-bracket file), matched by id. A record that cannot be read, or whose predicted and known
    sequences differ (compared upper-cased, T read as U), raises `InvalidSequencesError` listing all of them, or is
    left out of the scores and the means with `skip_invalid=True`. Ids found on one side only are reported
    (`missing_prediction`, `missing_reference`) and logged.
    """
    found, invalid_found, _ = _read_numbered(predicted)
    known, invalid_known, known_numbers = _read_numbered(reference)
    # A predicted file may carry its id in its header (a .ct title) rather than in its name.
    for stem, structure in list(found.items()):
        if stem not in known and structure.name in known and structure.name not in found:
            found[structure.name] = found.pop(stem)
    invalid = [*invalid_known, *invalid_found]
    rejected = {item.id for item in invalid}
    scores = []
    for identifier, truth in known.items():
        if identifier not in found:
            continue
        prediction = found[identifier]
        if _normalised(prediction.sequence) != _normalised(truth.sequence):
            reason = f"{Path(reference).name}: {_sequence_difference(prediction, truth)}"
            invalid.append(InvalidRecord(known_numbers[identifier], identifier, reason))
            continue
        scores.append(score_structure(identifier, prediction, truth))
    evaluation = Evaluation(
        scores,
        invalid,
        missing_prediction=[i for i in known if i not in found and i not in rejected],
        missing_reference=[i for i in found if i not in known and i not in rejected],
    )
    if log is not None:  # the ids on one side only, also before a run that stops
        if invalid and skip_invalid:
            for item in invalid:
                log(f"Skipped {item}")
        if evaluation.missing_prediction:
            log(
                f"No prediction for {len(evaluation.missing_prediction)}: {', '.join(evaluation.missing_prediction)}"
            )
        if evaluation.missing_reference:
            log(
                f"No reference for {len(evaluation.missing_reference)}: {', '.join(evaluation.missing_reference)}"
            )
    if invalid and not skip_invalid:
        raise InvalidSequencesError(invalid, "scored", "skip them with skip_invalid=True")
    return evaluation


def _sequence_difference(prediction: SecondaryStructure, truth: SecondaryStructure) -> str:
    a, b = _normalised(prediction.sequence), _normalised(truth.sequence)
    if len(a) != len(b):
        return f"the prediction's sequence has {len(a)} nt, the reference's {len(b)}"
    first = next(i for i, (x, y) in enumerate(zip(a, b, strict=True)) if x != y)
    return f"the sequences differ first at position {first + 1} ({a[first]!r} predicted, {b[first]!r} known)"
