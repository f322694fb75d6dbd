"""Data collators for training RNA-FM with `Trainer`: masked-LM batches and batches of residue-pair labels.

Sequence- and token-level tasks need nothing of ours: transformers' `DataCollatorWithPadding` and
`DataCollatorForTokenClassification` work as they are.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from transformers import DataCollatorForLanguageModeling, PreTrainedTokenizerBase

CANONICAL_LETTERS = frozenset("ACGU")


def canonical_residue_ids(tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """Ids of the tokens made of A, C, G and U only: the 4 nucleotides, or the 64 codons of mRNA-FM."""
    special = set(tokenizer.all_special_tokens)
    return sorted(
        index
        for token, index in tokenizer.get_vocab().items()
        if token not in special and set(token) <= CANONICAL_LETTERS
    )


@dataclass
class RnaFmDataCollatorForLanguageModeling(DataCollatorForLanguageModeling):
    """
    transformers' `DataCollatorForLanguageModeling`, with the random replacements drawn from real residues.

    The stock collator replaces a share of the selected tokens (`random_replace_prob`, 10% by default) with a token
    drawn from the whole vocabulary, which for RNA-FM includes `<cls>`, `<pad>`, `<eos>`, `<unk>`, `<mask>` and the
    unused `<null_1..4>`. This one draws them from `replacement_ids` instead: by default A, C, G and U (the 64
    codons for mRNA-FM). Everything else is the stock behaviour: special tokens and padding are never selected,
    `mlm_probability` (15%) of the others are, 80% of those become `<mask>`, and the labels are -100 elsewhere.

    Example:

    ```python
    >>> from rnafm_hf import RnaFmDataCollatorForLanguageModeling, RnaFmTokenizer
    >>> tokenizer = RnaFmTokenizer()
    >>> collator = RnaFmDataCollatorForLanguageModeling(tokenizer, seed=0)
    >>> [tokenizer.convert_ids_to_tokens(i) for i in collator.replacement_ids]
    ['A', 'C', 'G', 'U']
    >>> batch = collator([tokenizer("GGGAAACCCUUU"), tokenizer("ACGU")])
    >>> sorted(batch), tuple(batch["input_ids"].shape)
    (['attention_mask', 'input_ids', 'labels'], (2, 14))

    ```
    """

    replacement_ids: Sequence[int] | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.return_tensors != "pt":
            raise ValueError(f"{type(self).__name__} builds PyTorch batches only; leave return_tensors='pt'.")
        if self.replacement_ids is None:
            self.replacement_ids = canonical_residue_ids(self.tokenizer)
        special, size = set(self.tokenizer.all_special_ids), len(self.tokenizer)
        if (
            not self.replacement_ids
            or special & set(self.replacement_ids)
            or not all(0 <= i < size for i in self.replacement_ids)
        ):
            raise ValueError(
                f"replacement_ids must be a non-empty list of non-special token ids below {size}; got "
                f"{list(self.replacement_ids)}."
            )
        self._replacements = torch.tensor(list(self.replacement_ids), dtype=torch.long)

    def torch_mask_tokens(
        self, inputs: Any, special_tokens_mask: Any | None = None, offset_mapping: Any | None = None
    ) -> tuple[Any, Any]:
        # Let the stock code select and <mask> tokens with random replacement switched off, then replace a share
        # of the selected-but-kept tokens ourselves, with the probability the stock code would use.
        random_replace_prob, self.random_replace_prob = self.random_replace_prob, 0.0
        try:
            inputs, labels = super().torch_mask_tokens(inputs, special_tokens_mask, offset_mapping)
        finally:
            self.random_replace_prob = random_replace_prob
        if random_replace_prob == 0 or self.mask_replace_prob == 1:
            return inputs, labels
        kept = (labels != -100) & (inputs != self.tokenizer.mask_token_id)
        share = random_replace_prob / (1 - self.mask_replace_prob)
        replaced = torch.bernoulli(torch.full(labels.shape, share), generator=self.generator).bool() & kept
        draws = torch.randint(len(self._replacements), (int(replaced.sum()),), generator=self.generator)
        inputs[replaced] = self._replacements[draws]
        return inputs, labels


@dataclass
class DataCollatorForPairLabels:
    """
    Batches for the residue-pair models ([`RnaFmForSecondaryStructure`], [`RnaFmForContactPrediction`]): the
    tokens are padded by the tokenizer (on the right), and each example's `labels`, an (L, L) map over its L
    residues (1 paired, 0 not, a probability in between for soft labels, -100 ignored), are padded with -100 to
    the longest sequence of the batch, as float32.

    Example:

    ```python
    >>> from rnafm_hf import DataCollatorForPairLabels, RnaFmTokenizer
    >>> tokenizer = RnaFmTokenizer()
    >>> hairpin = dict(tokenizer("GGGAAACCC"), labels=[[0] * 9 for _ in range(9)])
    >>> short = dict(tokenizer("ACGU"), labels=[[0] * 4 for _ in range(4)])
    >>> batch = DataCollatorForPairLabels(tokenizer)([hairpin, short])
    >>> tuple(batch["labels"].shape), int(batch["labels"][1, 5, 5])
    ((2, 9, 9), -100)

    ```
    """

    tokenizer: PreTrainedTokenizerBase
    pad_to_multiple_of: int | None = None

    def __call__(self, features: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        if self.tokenizer.padding_side != "right":
            raise ValueError("Pair labels need right padding: set tokenizer.padding_side = 'right'.")
        inputs = [{key: value for key, value in feature.items() if key != "labels"} for feature in features]
        batch = self.tokenizer.pad(inputs, return_tensors="pt", pad_to_multiple_of=self.pad_to_multiple_of)
        labelled = ["labels" in feature for feature in features]
        if not any(labelled):
            return dict(batch)
        if not all(labelled):
            raise ValueError(
                f"Example {labelled.index(False)} of the batch has no labels but others have: label every "
                "example (-100 everywhere to ignore one)."
            )
        # The pair models return maps over the padded length minus <cls> and <eos>.
        size = batch["input_ids"].shape[1] - 2
        labels = torch.full((len(features), size, size), -100, dtype=torch.float32)
        for index, (feature, example) in enumerate(zip(features, inputs, strict=True)):
            label = torch.as_tensor(feature["labels"], dtype=torch.float32)
            residues = len(example["input_ids"]) - 2
            if label.shape != (residues, residues):
                raise ValueError(
                    f"Example {index} of the batch has {residues} residues but labels of shape "
                    f"{tuple(label.shape)}; give an ({residues}, {residues}) map over the residues, without "
                    "<cls> and <eos>."
                )
            wrong = ~((label == -100) | ((label >= 0) & (label <= 1)))
            if wrong.any():
                i, j = wrong.nonzero()[0].tolist()
                raise ValueError(
                    f"Example {index} of the batch has the pair label {label[i, j].item()} at ({i}, {j}); pair "
                    "labels are 1 (paired), 0 (not), a probability in between, or -100 (ignored)."
                )
            labels[index, :residues, :residues] = label
        batch["labels"] = labels
        return dict(batch)


__all__ = ["DataCollatorForPairLabels", "RnaFmDataCollatorForLanguageModeling", "canonical_residue_ids"]
