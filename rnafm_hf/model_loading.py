"""Load a converted folder strictly: every tensor the model needs comes from its weights file, or loading fails.

`from_pretrained` alone fills tensors missing from the file (or of another shape than config.json gives) with
random numbers and logs a table of warnings; `rnafm-hf embed`, `fold` and `serve` would then compute with them.
[`load_model`] asks transformers for its loading report (`output_loading_info=True`) and turns anything amiss into
a [`ModelFolderError`]; [`NonFiniteOutputError`] is what the runs raise when the model outputs NaN or Inf anyway.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from safetensors import SafetensorError
from transformers import PreTrainedModel

from .configuration_rnafm import RnaFmConfigError

# Tensors a folder may lack: the contact regression, which an original file without one (and so its converted
# folder) does not have; it is untrained in the released checkpoints anyway (`config.contact_head_trained`).
ALLOWED_MISSING = (r"(^|\.)contact_head\.regression\.",)
LISTED = 4  # names shown per kind of problem
RECONVERT = (
    "Convert the original checkpoint again (`rnafm-hf convert FILE --output FOLDER`), or download the folder "
    "again."
)
# transformers logs its loading report here, before `load_model` has looked at it.
_REPORT_LOGGER = "transformers.modeling_utils"
_REPORT_MARK = "LOAD REPORT"


class ModelFolderError(ValueError):
    """A model folder that cannot be used as it is: its weights do not match its config.json (tensors missing,
    unexpected or of other shapes), its config.json holds impossible values, or its weights are not finite."""


def non_finite_cause(float16_remedy: str | None = None) -> str:
    """Why a model computes NaN or Inf: its weights, or, when it ran in float16 (pass how to avoid that), overflow
    of float16's narrow range."""
    cause = (
        "The weights hold NaN or Inf, or make the model overflow: convert the original checkpoint again "
        "(`rnafm-hf convert`)."
    )
    if float16_remedy is None:
        return cause
    return (
        f"float16 holds numbers up to 65504 only and most likely overflowed: {float16_remedy} Otherwise, "
        f"{cause[0].lower()}{cause[1:]}"
    )


class NonFiniteOutputError(ValueError):
    """The model computed NaN or Inf for an input; nothing was written for it. `.subject` names the input (a record
    id or a sequence) and `.sequence` holds its sequence where known."""

    def __init__(self, subject: str, cause: str, sequence: str | None = None):
        self.subject, self.cause, self.sequence = subject, cause, sequence
        super().__init__(
            f"The model's output for {subject} is not finite (NaN or Inf); nothing was written for it. {cause}"
        )


def _listed(items: Sequence[str], separator: str = ", ") -> str:
    """The first few items, and how many more there are."""
    shown = separator.join(items[:LISTED])
    return shown + (f"{separator}and {len(items) - LISTED} more" if len(items) > LISTED else "")


def loading_problems(info: dict[str, Any], allow_missing: Iterable[str] = ALLOWED_MISSING) -> list[str]:
    """What the loading report (`from_pretrained(..., output_loading_info=True)`) says is wrong, one phrase per
    kind: missing tensors (except those matching `allow_missing`), unexpected ones (transformers has already left
    out the heads of other model classes) and tensors whose shape differs from the one config.json gives."""
    patterns = tuple(allow_missing)
    allowed = re.compile("|".join(patterns)) if patterns else None
    missing = sorted(key for key in info["missing_keys"] if allowed is None or not allowed.search(key))
    unexpected = sorted(info["unexpected_keys"])
    mismatched = [
        f"{key} is {tuple(in_file)} in the file, {tuple(expected)} per config.json"
        for key, in_file, expected in sorted(info["mismatched_keys"])
    ]
    problems = []
    if missing:
        problems.append(f"{len(missing)} tensor(s) the model needs are missing ({_listed(missing)})")
    if unexpected:
        problems.append(f"{len(unexpected)} tensor(s) have no place in the model ({_listed(unexpected)})")
    if mismatched:
        problems.append(f"{len(mismatched)} tensor(s) have another shape ({_listed(mismatched, '; ')})")
    return problems


def is_finite(tensor: torch.Tensor) -> bool:
    """Whether a tensor is free of NaN and Inf, read off its extremes (amax and amin propagate NaN): no
    full-size mask, ~5x faster than `torch.isfinite(tensor).all()` on a CPU."""
    if not tensor.is_floating_point() or tensor.numel() == 0:
        return True
    return bool(torch.isfinite(tensor.amax())) and bool(torch.isfinite(tensor.amin()))


def non_finite_tensors(model: torch.nn.Module) -> list[str]:
    """Names of the model's parameters and buffers that hold NaN or Inf (two reductions per tensor; ~0.05 s for
    RNA-FM's 100 M parameters on a CPU)."""
    tensors = [*model.named_parameters(), *model.named_buffers()]
    return sorted(name for name, tensor in tensors if not is_finite(tensor.detach()))


@contextmanager
def _held_back_load_report() -> Iterator[list[logging.LogRecord]]:
    """Keep transformers' loading report out of the log while loading; the records held are yielded, so that they
    can be let through when the load is accepted."""
    logger = logging.getLogger(_REPORT_LOGGER)
    held: list[logging.LogRecord] = []

    def hold(record: logging.LogRecord) -> bool:
        if _REPORT_MARK in str(record.msg):
            held.append(record)
            return False
        return True

    logger.addFilter(hold)
    try:
        yield held
    finally:
        logger.removeFilter(hold)


def load_model(
    name_or_path: str | os.PathLike,
    model_class: type,
    *args: Any,
    allow_missing: Iterable[str] = ALLOWED_MISSING,
    check_finite: bool = True,
    **kwargs: Any,
) -> PreTrainedModel:
    """
    `model_class.from_pretrained(name_or_path, *args, **kwargs)` (a model class or an Auto class), refusing a folder
    that does not hold what the model needs: a [`ModelFolderError`] lists the tensors missing from the weights
    (other than those matching the regular expressions `allow_missing`, by default the contact regression),
    those the model has no place for (beyond the heads of other RNA-FM classes, which transformers leaves out),
    and those of another shape than config.json gives; it also names the fields of an invalid config.json and,
    with `check_finite`, the tensors that hold NaN or Inf. Transformers' loading report is logged only when the
    load is accepted.

    ```python
    >>> from transformers import AutoModel
    >>> from rnafm_hf.model_loading import load_model
    >>> encoder = load_model("rna-fm", AutoModel)  # doctest: +SKIP

    ```
    """
    name = os.fspath(name_or_path)
    # Tensors of another shape come back in the report (not as an error after a logged table), refused below.
    kwargs = {**kwargs, "output_loading_info": True, "ignore_mismatched_sizes": True}
    with _held_back_load_report() as report:
        try:
            model, info = model_class.from_pretrained(name, *args, **kwargs)
        except RnaFmConfigError as error:
            raise ModelFolderError(f"{name}: config.json is not valid: {error} {RECONVERT}") from error
        except SafetensorError as error:  # e.g. a file cut short by an interrupted copy
            raise ModelFolderError(
                f"{name}: the weights file cannot be read ({error}). {RECONVERT}"
            ) from error
    if problems := loading_problems(info, allow_missing):
        raise ModelFolderError(
            f"{name} is damaged, or its config.json does not match its weights: " + "; ".join(problems) + ". "
            "Loaded anyway, the model would compute with random numbers in place of what is missing or without "
            f"part of what is stored. {RECONVERT}"
        )
    for record in report:
        logging.getLogger(_REPORT_LOGGER).handle(record)
    if check_finite and (bad := non_finite_tensors(model)):
        raise ModelFolderError(
            f"{name}: the weights hold NaN or Inf in {len(bad)} tensor(s) ({_listed(bad)}); every output would "
            f"be NaN. {RECONVERT}"
        )
    return model
