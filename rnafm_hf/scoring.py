"""
Zero-shot scores from RNA-FM's masked-language-model head: pseudo-log-likelihoods of sequences and the effect
scores of mutations, in the conventions of the RNAGym fitness benchmark (Arora et al. 2024):

- `pll`: the pseudo-log-likelihood, the sum over residues of log p(residue) with that residue masked (natural log),
  and `pll_per_residue`, that sum over the length (in tokens: nucleotides, or codons for mRNA-FM);
- `masked_marginal`: all mutated positions masked together, the sum of log p(mutant) - log p(wild type) there;
- `wt_marginal`: the same sum read from the unmasked wild type;
- `pll_difference` (on request): the mutant's PLL minus the wild type's.

Probabilities are taken over A, C, G and U only (the 64 codons for mRNA-FM): the head's other tokens (IUPAC codes,
`-`, special tokens) are left out and the rest renormalised, so the scores compare real residues. The masked
copies of every sequence run packed end to end in batches of at most `batch_tokens` tokens, as `embed` runs.

```python
>>> import torch
>>> from rnafm_hf import RnaFmConfig, RnaFmForMaskedLM, RnaFmTokenizer
>>> from rnafm_hf.scoring import score_mutations, score_sequences
>>> model = RnaFmForMaskedLM(RnaFmConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
...                                      intermediate_size=64)).eval()
>>> [(s.id, s.length) for s in score_sequences({"a": "GGGAAACCC"}, model, tokenizer=RnaFmTokenizer(),
...                                             progress=False)]
[('a', 9)]
>>> [m.mutation for m in score_mutations({"a": "GGGAAACCC"}, [("a", "G2A:A5C")], model,
...                                      tokenizer=RnaFmTokenizer(), progress=False)]
['G2A:A5C']

```
"""

from __future__ import annotations

import csv
import os
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import accumulate, chain
from pathlib import Path

import torch

from .devices import checked_device
from .options import DEFAULT_BATCH_TOKENS
from .records import InputRules, InvalidRecord, InvalidSequencesError, SequenceRecord, checked, read_inputs

MUTATION = re.compile(r"^([A-Za-z])(\d+)([A-Za-z])$")
NUCLEOTIDES = "ACGU"


@dataclass(frozen=True)
class SequenceScore:
    id: str
    length: int
    pll: float

    @property
    def pll_per_residue(self) -> float:
        return self.pll / self.length


@dataclass(frozen=True)
class MutationScore:
    id: str
    mutation: str
    masked_marginal: float
    wt_marginal: float
    pll_difference: float | None = None


@dataclass(frozen=True)
class Pass:
    """One forward pass of a sequence: its token `ids` (shared by all the passes of a sequence) with the `masked`
    positions replaced by `<mask>` when the pass runs, and the positions whose residue probabilities are read.
    Only a batch's own passes are ever built whole, so memory grows with the input's length, not its square."""

    key: object
    ids: tuple[int, ...]
    masked: tuple[int, ...]
    read: tuple[int, ...]

    def tokens(self, mask_id: int) -> list[int]:
        tokens = list(self.ids)
        for position in self.masked:
            tokens[position] = mask_id
        return tokens


class Scorer:
    """A masked-LM model, its tokenizer and the residue vocabulary the scores are taken over."""

    def __init__(self, model, tokenizer=None, device: str | None = None):
        from .model_loading import load_model
        from .model_names import check_model_name, model_location
        from .modeling_rnafm import RnaFmForMaskedLM

        if isinstance(model, (str, os.PathLike)):
            from transformers import AutoTokenizer

            name = model_location(check_model_name(model))
            model = load_model(name, RnaFmForMaskedLM, dtype=torch.float32)
            tokenizer = tokenizer or AutoTokenizer.from_pretrained(name)
        elif tokenizer is None:
            raise ValueError("With a loaded model, pass its tokenizer too (tokenizer=...).")
        device = checked_device(device) or torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.device = device
        self.model = model.eval().to(device)
        self.tokenizer = tokenizer
        self.k_mer = model.config.k_mer
        self.max_tokens = model.config.max_tokens
        vocabulary = tokenizer.get_vocab()
        self.residues = [t for t in vocabulary if len(t) == self.k_mer and set(t) <= set(NUCLEOTIDES)]
        self.residue_ids = torch.tensor([vocabulary[t] for t in self.residues], device=device)
        self.column_of = {vocabulary[t]: column for column, t in enumerate(self.residues)}
        self.mask_id = tokenizer.mask_token_id
        self._token_ids: dict[str, tuple[int, ...]] = {}

    def token_ids(self, record: SequenceRecord) -> tuple[int, ...]:
        """The record's token ids, tokenized once (the checks read them, then the scores)."""
        if record.sequence not in self._token_ids:
            self._token_ids[record.sequence] = tuple(self.tokenizer(record.sequence)["input_ids"])
        return self._token_ids[record.sequence]

    def checked(self, inputs) -> list[SequenceRecord]:
        """The records of `inputs`, normalised (upper case, T as U), after the rules `embed` applies (duplicate
        ids, empty records, letters outside the alphabet, too long, partial codons) and the scores' own: only
        A, C, G, U (or the 64 codons). Any record that fails raises `InvalidSequencesError` listing all."""
        rules = InputRules.of(self.tokenizer, self.max_tokens - 2, long_remedy="score a shorter region")
        valid, _ = checked(rules, read_inputs(inputs), False, None, "scored", "remove or fix them")
        if invalid := self._other_residues(valid):
            raise InvalidSequencesError(invalid, "scored", "remove or fix them")
        return valid

    def _other_residues(self, records: Sequence[SequenceRecord]) -> list[InvalidRecord]:
        unit = "codon" if self.k_mer == 3 else "nucleotide"
        invalid = []
        for record in records:
            ids = self.token_ids(record)
            others = [position for position, token in enumerate(ids[1:-1], 1) if token not in self.column_of]
            if others:
                where = ", ".join(
                    f"{record.sequence[(p - 1) * self.k_mer : p * self.k_mer]!r} at {(p - 1) * self.k_mer + 1}"
                    for p in others[:5]
                )
                invalid.append(
                    InvalidRecord(record.number, record.id, f"not a {unit} of A, C, G and U: {where}")
                )
        return invalid

    def read(
        self, passes: Sequence[Pass], batch_tokens: int, progress: bool
    ) -> Iterator[tuple[Pass, int, torch.Tensor]]:
        """`(pass, position, log-probabilities over the residues)` for every pass and read position, batch by batch,
        so that callers keep sums rather than every vector. Passes are packed end to end, up to `batch_tokens`
        tokens a batch (a longer pass goes alone)."""
        from tqdm.auto import tqdm

        batches, current, size = [], [], 0
        for item in sorted(passes, key=lambda p: len(p.ids)):  # stable: a sequence's passes stay together
            if current and size + len(item.ids) > batch_tokens:
                batches.append(current)
                current, size = [], 0
            current.append(item)
            size += len(item.ids)
        if current:
            batches.append(current)
        for batch in tqdm(batches, desc="Scoring", unit="batch", disable=not progress):
            scores = iter(self._batch_log_probabilities(batch))
            for item in batch:
                for position in item.read:
                    yield item, position, next(scores)

    def _batch_log_probabilities(self, batch: Sequence[Pass]) -> torch.Tensor:
        """(read positions, residues) log-probabilities of one packed batch, in pass and position order."""
        bounds = [0, *accumulate(len(item.ids) for item in batch)]
        tokens = list(chain.from_iterable(item.tokens(self.mask_id) for item in batch))
        with torch.inference_mode():
            logits = self.model(
                input_ids=torch.tensor([tokens], device=self.device),
                cu_seq_lens_q=torch.tensor(bounds, device=self.device),
            ).logits[0]
            rows = [
                start + position for item, start in zip(batch, bounds, strict=False) for position in item.read
            ]
            return torch.log_softmax(logits[rows][:, self.residue_ids].float(), dim=-1).cpu()

    def log_p(self, scores: torch.Tensor, token: int) -> float:
        """The log-probability of residue `token` in a row of `read`'s scores."""
        return float(scores[self.column_of[token]])

    def pll_passes(self, key: object, ids: tuple[int, ...]) -> list[Pass]:
        """One pass per residue, that residue masked; all under `key`, whose PLL is the sum of what they read."""
        return [Pass(key, ids, (position,), (position,)) for position in range(1, len(ids) - 1)]


def score_sequences(
    inputs,
    model="rna-fm",
    *,
    tokenizer=None,
    batch_tokens: int = DEFAULT_BATCH_TOKENS,
    device: str | None = None,
    progress: bool = True,
) -> list[SequenceScore]:
    """The pseudo-log-likelihood of every sequence (a FASTA path, `{id: sequence}` or a list; see `embed`), in
    input order. Sequences with residues the scores cannot read, or longer than the model, raise
    `InvalidSequencesError` listing them."""
    scorer = Scorer(model, tokenizer, device)
    records = scorer.checked(inputs)
    ids = {record.id: scorer.token_ids(record) for record in records}
    passes = [p for record in records for p in scorer.pll_passes(record.id, ids[record.id])]
    plls = dict.fromkeys(ids, 0.0)
    for item, position, scores in scorer.read(passes, batch_tokens, progress):
        plls[item.key] += scorer.log_p(scores, item.ids[position])
    return [SequenceScore(record.id, len(ids[record.id]) - 2, plls[record.id]) for record in records]


def parse_mutation(text: str, sequence: str, where: str) -> dict[int, tuple[str, str]]:
    """`A5G` or `A5G:C7U` (1-based, `:` joining several) -> `{0-based position: (wild type, mutant)}`, checked
    against `sequence`; errors name `where` (the row)."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"{where}: no mutation given (write it like A5G, several joined by ':').")
    changes = {}
    for part in text.strip().split(":"):
        found = MUTATION.match(part.strip())
        if not found:
            raise ValueError(f"{where}: {part!r} is not a mutation like A5G (several joined by ':').")
        wild, position, mutant = (
            found[1].upper().replace("T", "U"),
            int(found[2]),
            found[3].upper().replace("T", "U"),
        )
        if not 1 <= position <= len(sequence):
            raise ValueError(f"{where}: position {position} is outside the sequence (1-{len(sequence)}).")
        if sequence[position - 1] != wild:
            raise ValueError(
                f"{where}: {part} says {wild} at {position}, but the sequence has {sequence[position - 1]} there."
            )
        if mutant not in NUCLEOTIDES or mutant == wild:
            raise ValueError(f"{where}: {part} must change {wild} into another of A, C, G, U.")
        if position - 1 in changes:
            raise ValueError(f"{where}: position {position} is mutated twice.")
        changes[position - 1] = (wild, mutant)
    return changes


def read_mutations(path: str | os.PathLike) -> list[tuple[str, str]]:
    """Rows `(id, mutation)` of a TSV with the columns `id` and `mutation` (blank lines skipped); a row without
    both, or a file without rows, raises `ValueError` naming the file and line."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle, delimiter="\t")
            if not reader.fieldnames or not {"id", "mutation"} <= set(reader.fieldnames):
                raise ValueError(f"{path}: needs a header with the columns id and mutation (tab-separated).")
            rows = []
            for row in reader:
                identifier, mutation = (row.get("id") or "").strip(), (row.get("mutation") or "").strip()
                if not identifier or not mutation:
                    raise ValueError(
                        f"{path}, line {reader.line_num}: needs an id and a mutation (tab-separated); got "
                        f"{identifier!r} and {mutation!r}."
                    )
                rows.append((identifier, mutation))
    except UnicodeDecodeError as error:
        raise ValueError(f"{path}: not UTF-8 text ({error.reason} at byte {error.start}).") from None
    if not rows:
        raise ValueError(f"{path}: holds no mutation rows under its header.")
    return rows


def score_mutations(
    inputs,
    mutations: Iterable[tuple[str, str]],
    model="rna-fm",
    *,
    tokenizer=None,
    pll_difference: bool = False,
    batch_tokens: int = DEFAULT_BATCH_TOKENS,
    device: str | None = None,
    progress: bool = True,
) -> list[MutationScore]:
    """
    `masked_marginal` and `wt_marginal` (and with `pll_difference`, the mutant's PLL minus the wild type's) of
    every `(id, mutation)` row against the wild-type sequences `inputs`, in row order. For mRNA-FM the positions
    are nucleotides and each codon they touch is scored as one token. A row whose id is unknown, whose wild-type
    letter does not match or whose position is outside the sequence raises `ValueError` naming the row.
    """
    scorer = Scorer(model, tokenizer, device)
    records = {record.id: record for record in scorer.checked(inputs)}
    rows = []
    for number, (identifier, text) in enumerate(mutations, 1):
        where = f"mutation row {number} ({identifier!r}, {text!r})"
        if identifier not in records:
            raise ValueError(f"{where}: no sequence has the id {identifier!r}.")
        rows.append((identifier, text, parse_mutation(text, records[identifier].sequence, where)))

    wild_ids = {identifier: scorer.token_ids(record) for identifier, record in records.items()}
    mutant_ids, touched = [], []
    for identifier, _, changes in rows:
        mutant = list(records[identifier].sequence)
        for position, (_, letter) in changes.items():
            mutant[position] = letter
        mutant_ids.append(tuple(scorer.tokenizer("".join(mutant))["input_ids"]))
        touched.append(tuple(sorted({position // scorer.k_mer + 1 for position in changes})))
    # Each distinct pass once, in row order (the same batches each run): the unmasked wild types read where some row
    # mutates them, each set of masked positions of a sequence (G2A, G2C and G2U share one), each sequence's PLL.
    needed: dict[str, set[int]] = {}
    for (identifier, _, _), positions in zip(rows, touched, strict=True):
        needed.setdefault(identifier, set()).update(positions)
    masked_sets = dict.fromkeys((identifier, touched[n]) for n, (identifier, _, _) in enumerate(rows))
    passes = [
        Pass(("unmasked", i), wild_ids[i], (), tuple(sorted(positions))) for i, positions in needed.items()
    ]
    passes += [Pass(("masked", key), wild_ids[key[0]], key[1], key[1]) for key in masked_sets]
    if pll_difference:
        sequences = dict.fromkeys([*(wild_ids[i] for i in needed), *mutant_ids])
        passes += [p for ids in sequences for p in scorer.pll_passes(("pll", ids), ids)]

    read: dict[tuple[str, object, int], torch.Tensor] = {}
    plls: dict[tuple[int, ...], float] = {}
    for item, position, scores in scorer.read(passes, batch_tokens, progress):
        kind, owner = item.key
        if kind == "pll":
            plls[owner] = plls.get(owner, 0.0) + scorer.log_p(scores, item.ids[position])
        else:
            read[kind, owner, position] = scores

    def marginal(
        kind: str, owner: object, wild: tuple[int, ...], mutant: tuple[int, ...], at: tuple[int, ...]
    ):
        return sum(
            scorer.log_p(read[kind, owner, p], mutant[p]) - scorer.log_p(read[kind, owner, p], wild[p])
            for p in at
        )

    results = []
    for number, (identifier, text, _) in enumerate(rows):
        wild, mutant, at = wild_ids[identifier], mutant_ids[number], touched[number]
        results.append(
            MutationScore(
                identifier,
                text,
                marginal("masked", (identifier, at), wild, mutant, at),
                marginal("unmasked", identifier, wild, mutant, at),
                plls[mutant] - plls[wild] if pll_difference else None,
            )
        )
    return results


def score(
    inputs,
    model="rna-fm",
    *,
    mutations: str | os.PathLike | Iterable[tuple[str, str]] | None = None,
    pll_difference: bool = False,
    output: str | os.PathLike | None = None,
    tokenizer=None,
    batch_tokens: int = DEFAULT_BATCH_TOKENS,
    device: str | None = None,
    progress: bool = True,
) -> list[SequenceScore] | list[MutationScore]:
    """
    What `rnafm-hf score` does: the pseudo-log-likelihood of every sequence in `inputs` (`score_sequences`) or,
    with `mutations` (a TSV path with the columns `id` and `mutation`, or `(id, mutation)` rows), the scores of
    every mutation against those wild types (`score_mutations`). With `output`, the scores are also written there
    as TSV (`id, length, pll, pll_per_residue`, or `id, mutation, masked_marginal, wt_marginal[, pll_difference]`).

    ```python
    >>> import torch
    >>> from rnafm_hf import RnaFmConfig, RnaFmForMaskedLM, RnaFmTokenizer, score
    >>> model = RnaFmForMaskedLM(RnaFmConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
    ...                                      intermediate_size=64)).eval()
    >>> [s.length for s in score({"a": "GGGAAACCC"}, model, tokenizer=RnaFmTokenizer(), progress=False)]
    [9]
    >>> rows = score({"a": "GGGAAACCC"}, model, mutations=[("a", "A5C")], pll_difference=True,
    ...              tokenizer=RnaFmTokenizer(), progress=False)
    >>> rows[0].mutation, rows[0].pll_difference is not None
    ('A5C', True)

    ```
    """
    options = {"tokenizer": tokenizer, "batch_tokens": batch_tokens, "device": device, "progress": progress}
    if mutations is None:
        if pll_difference:
            raise ValueError("pll_difference=True compares mutants with their wild type: give mutations too.")
        scores = score_sequences(inputs, model, **options)
        if output is not None:
            write_sequence_scores(scores, output)
        return scores
    if isinstance(mutations, (str, os.PathLike)):
        mutations = read_mutations(mutations)
    scores = score_mutations(inputs, mutations, model, pll_difference=pll_difference, **options)
    if output is not None:
        write_mutation_scores(scores, output, pll_difference)
    return scores


def write_sequence_scores(scores: Sequence[SequenceScore], path: str | os.PathLike) -> Path:
    lines = ["id\tlength\tpll\tpll_per_residue"]
    lines += [f"{s.id}\t{s.length}\t{s.pll:.6f}\t{s.pll_per_residue:.6f}" for s in scores]
    Path(path).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return Path(path)


def write_mutation_scores(
    scores: Sequence[MutationScore], path: str | os.PathLike, pll_difference: bool | None = None
) -> Path:
    """The scores as TSV; the `pll_difference` column when asked for, or by default when the scores have it."""
    extra = (
        bool(scores and scores[0].pll_difference is not None) if pll_difference is None else pll_difference
    )
    lines = ["id\tmutation\tmasked_marginal\twt_marginal" + ("\tpll_difference" if extra else "")]
    for s in scores:
        row = f"{s.id}\t{s.mutation}\t{s.masked_marginal:.6f}\t{s.wt_marginal:.6f}"
        lines.append(row + (f"\t{s.pll_difference:.6f}" if extra else ""))
    Path(path).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return Path(path)


__all__ = [
    "MutationScore",
    "SequenceScore",
    "parse_mutation",
    "read_mutations",
    "score",
    "score_mutations",
    "score_sequences",
    "write_mutation_scores",
    "write_sequence_scores",
]
