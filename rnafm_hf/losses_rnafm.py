"""Losses of the RNA-FM heads whose labels transformers' loss functions do not cover as they are: pair maps, and the
checks that keep Trainer's label count (and so gradient accumulation) exact."""

import torch
from torch.nn import functional as F

from .configuration_rnafm import RnaFmConfig


def check_no_labels_outside(labels: torch.Tensor, inside: torch.Tensor, where: str, how: str) -> None:
    """Under Trainer, which scales the loss by its own count of labels that are not -100, every label outside the
    residues must be -100, or the count (and so the loss) would be off."""
    outside = (labels != -100) & ~inside
    if outside.any():
        index = outside.nonzero()[0].tolist()
        raise ValueError(
            f"Sequence {index[0]} of the batch has a label at {where} {tuple(index[1:])}, outside its residues. "
            f"Trainer counts every label that is not -100 to scale the loss, so give -100 there ({how})."
        )


def pair_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    residue_mask: torch.Tensor,
    num_items_in_batch: torch.Tensor | int | None = None,
) -> torch.Tensor:
    """Binary cross-entropy over the labelled (not -100) pairs of real residues: their mean, or their sum over
    `num_items_in_batch` (Trainer's count of labelled pairs in the whole batch, which makes gradient accumulation
    match one large batch)."""
    if labels.shape != logits.shape:
        raise ValueError(
            f"Pair labels have shape {tuple(labels.shape)} but the model's pair map is {tuple(logits.shape)}: one "
            "(L, L) map per sequence over its residues, without <cls> and <eos>, padded with -100 to the longest "
            "sequence of the batch. rnafm_hf.DataCollatorForPairLabels builds them."
        )
    residue_pairs = residue_mask[:, :, None] & residue_mask[:, None, :]
    if num_items_in_batch is not None:
        check_no_labels_outside(labels, residue_pairs, "pair", "DataCollatorForPairLabels pads with -100")
    valid = (labels != -100) & residue_pairs
    if not valid.any():  # a batch without labelled pairs contributes nothing (rather than NaN)
        return logits.sum() * 0.0
    targets = labels[valid].to(logits.dtype)
    if num_items_in_batch is None:
        return F.binary_cross_entropy_with_logits(logits[valid], targets)
    summed = F.binary_cross_entropy_with_logits(logits[valid], targets, reduction="sum")
    return summed / torch.as_tensor(num_items_in_batch, device=summed.device)


def sequence_labels(labels: torch.Tensor, logits: torch.Tensor, config: RnaFmConfig) -> torch.Tensor:
    """Labels checked against `config.problem_type` (inferred as transformers does when unset) and cast to what
    its loss takes."""
    if config.problem_type is None:
        if config.num_labels == 1:
            config.problem_type = "regression"
        elif labels.dtype in (torch.long, torch.int):
            config.problem_type = "single_label_classification"
        else:
            config.problem_type = "multi_label_classification"
    batch, problem = logits.shape[0], config.problem_type
    if problem == "single_label_classification":
        if labels.shape != (batch,) or labels.is_floating_point():
            raise ValueError(
                f"Single-label classification takes one class index per sequence, integer labels of shape "
                f"({batch},); got {labels.dtype} labels of shape {tuple(labels.shape)}. For several labels per "
                "sequence give float labels of shape (batch, num_labels) and set "
                "problem_type='multi_label_classification'."
            )
        return labels
    expected = {(batch, config.num_labels)} | ({(batch,)} if config.num_labels == 1 else set())
    if tuple(labels.shape) not in expected:
        raise ValueError(
            f"{problem} takes labels of shape ({batch}, {config.num_labels}) (num_labels per sequence); got "
            f"{tuple(labels.shape)}."
        )
    return labels.to(logits.dtype)
