"""The `"rna-secondary-structure"` pipeline, registered with transformers when `rnafm_hf` is imported."""

from __future__ import annotations

import os
from functools import cached_property
from typing import Any

import torch
from transformers import Pipeline
from transformers.pipelines import PIPELINE_REGISTRY
from transformers.utils import logging

from .auto import AutoModelForContactPrediction
from .devices import checked_device
from .long_folding import long_sequence_logits
from .model_loading import NonFiniteOutputError, is_finite, load_model, non_finite_cause
from .model_names import model_location
from .records import InputRules, InvalidRecord, InvalidSequencesError, SequenceRecord
from .structure import fold_probabilities

logger = logging.get_logger(__name__)

TASK = "rna-secondary-structure"
FLOAT16_REMEDY = "load the model in float32 (`dtype=torch.float32`), or convert it without --dtype float16."


class RnaSecondaryStructurePipeline(Pipeline):
    """
    Predict RNA secondary structures with RNA-FM's ResNet head (a converted `RNA-FM-ResNet_*.pth` folder).

    Call it with one sequence or a list; each result is a dict with `sequence` (as read: upper case, T as U),
    `dot_bracket` (None, with a warning, for a structure nested deeper than dot-bracket's 30 pseudoknot levels),
    `pairs` (0-based `(i, j)`, i < j), `multiplets` (pairs above the threshold rejected because a
    base was taken) and, with `return_probabilities=True`, the (L, L) `probabilities` as a NumPy array. The pairs
    are read off the probabilities as the original script does (`rnafm_hf.structure.fold_probabilities`): keyword
    arguments `threshold` (default: the model config's `ss_threshold`), `canonical_only` and `min_loop` change
    that. `batch_size=` batches sequences; each gets the map it gets alone (up to float rounding). A folder named
    by `model=` is loaded strictly ([`rnafm_hf.model_loading.load_model`]: weights that do not match config.json are
    refused), and a map holding NaN or Inf raises [`rnafm_hf.model_loading.NonFiniteOutputError`].

    Example:

    ```python
    >>> import rnafm_hf
    >>> from transformers import pipeline
    >>> fold = pipeline("rna-secondary-structure", model="rna-fm-ss")  # doctest: +SKIP
    >>> fold("GGGUGCGAUCAUACCAGCACUAAUGCCCUCCUGGGAAGUCCUCGUGUUGCACCCCU")["dot_bracket"]  # doctest: +SKIP

    ```
    """

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        if self.tokenizer.padding_side != "right":
            raise ValueError(
                "The secondary-structure model reads right-padded batches; set tokenizer.padding_side = 'right'."
            )
        # By name, so that the class of a folder's remote code passes as well.
        if type(self.model).__name__ != "RnaFmForSecondaryStructure":
            raise ValueError(
                f"The {TASK!r} pipeline needs RNA-FM's secondary-structure model, but got "
                f"{type(self.model).__name__}. Convert RNA-FM-ResNet_PDB-All.pth (`rnafm-hf convert FILE`) and pass "
                "that folder as model=."
            )

    def _sanitize_parameters(
        self,
        threshold: float | None = None,
        canonical_only: bool | None = None,
        min_loop: int | None = None,
        return_probabilities: bool | None = None,
        long: str | None = None,
        **kwargs: Any,
    ) -> tuple[dict, dict, dict]:
        if kwargs:
            raise TypeError(
                f"Unknown option(s) {', '.join(sorted(kwargs))}; the {TASK!r} pipeline takes threshold, "
                "canonical_only, min_loop, return_probabilities and long."
            )
        if long not in (None, "error", "window"):
            raise ValueError(f"long is 'error' or 'window'; got {long!r}.")
        if threshold is not None and not 0.0 <= threshold <= 1.0:
            raise ValueError(f"threshold is a probability, between 0 and 1; got {threshold}.")
        options = {
            "threshold": threshold,
            "canonical_only": canonical_only,
            "min_loop": min_loop,
            "return_probabilities": return_probabilities,
        }
        preprocess = {} if long is None else {"long": long}
        return preprocess, {}, {key: value for key, value in options.items() if value is not None}

    @cached_property
    def rules(self) -> InputRules:
        """The input rules `embed` and `fold` apply too (`rnafm_hf.records`)."""
        return InputRules.of(
            self.tokenizer,
            self.model.config.max_tokens - 2,
            long_remedy="fold it with long='window', or a shorter region",
        )

    @cached_property
    def window_rules(self) -> InputRules:
        """The rules with `long="window"`: any length."""
        return InputRules.of(self.tokenizer, self.model.config.max_tokens - 2, allow_long=True)

    def __call__(self, inputs: Any, *args: Any, **kwargs: Any) -> Any:
        """Fold one sequence or a list of them; a list is checked whole, before any compute, and every sequence
        that cannot be folded is listed (by its 1-based number) in one `InvalidSequencesError`."""
        window = kwargs.get("long") == "window"
        if window and kwargs.get("batch_size", 1) > 1:
            raise ValueError("long='window' folds one sequence at a time: leave batch_size at 1.")
        rules = self.window_rules if window else self.rules
        if isinstance(inputs, (list, tuple)):
            if bad := [item for item in inputs if not isinstance(item, str)]:
                raise TypeError(f"Pass RNA sequences as strings, got {type(bad[0]).__name__}.")
            records = [
                SequenceRecord(f"sequence {n}", "".join(s.split()), n) for n, s in enumerate(inputs, 1)
            ]
            _, invalid = rules.check(records)
            invalid = [item for item in invalid if not item.reason.startswith("duplicate id")]
            if invalid:
                raise InvalidSequencesError(invalid, "folded", "Fix them, or leave them out")
        return super().__call__(inputs, *args, **kwargs)

    def preprocess(self, sequence: str, long: str = "error") -> dict[str, Any]:
        if not isinstance(sequence, str):
            raise TypeError(f"Pass RNA sequences as strings, got {type(sequence).__name__}.")
        rules = self.window_rules if long == "window" else self.rules
        residues = rules.normalise("".join(sequence.split()))
        if reason := rules.reason("sequence", residues):
            shown = sequence if len(sequence) <= 30 else f"{sequence[:30]}..."
            raise InvalidSequencesError(
                [InvalidRecord(1, shown, reason)], "folded", "Fix it, or leave it out"
            )
        if long == "window" and len(residues) > self.model.config.max_tokens - 2:
            return {"sequence": residues, "windows": True}  # embedded by windows in _forward
        inputs = self.tokenizer(residues, return_tensors="pt")
        return {**inputs, "sequence": residues}

    def _forward(self, inputs: dict[str, Any]) -> dict[str, Any]:
        sequence = inputs.pop("sequence")
        if inputs.pop("windows", False):
            logits = long_sequence_logits(self.model, self.tokenizer, sequence)
        else:
            logits = self.model(**inputs).logits
        probabilities = torch.sigmoid(logits.float())
        if not is_finite(probabilities):  # two reductions, no mask; the culprit is sought only now
            self._refuse_non_finite(probabilities, [sequence] if isinstance(sequence, str) else sequence)
        return {"probabilities": probabilities, "sequence": sequence}

    def _refuse_non_finite(self, probabilities: torch.Tensor, sequences: list[str]) -> None:
        """Raise `NonFiniteOutputError` for the first sequence of the batch whose map holds NaN or Inf (padding,
        which no result shows, aside)."""
        for row, sequence in enumerate(sequences):
            length = len(sequence)
            if not bool(torch.isfinite(probabilities[row, :length, :length]).all()):
                cause = non_finite_cause(FLOAT16_REMEDY if self.model.dtype == torch.float16 else None)
                shown = sequence if length <= 30 else f"{sequence[:30]}..."
                raise NonFiniteOutputError(f"the sequence {shown!r} ({length} nt)", cause, sequence)

    def postprocess(
        self,
        outputs: dict[str, torch.Tensor],
        threshold: float | None = None,
        canonical_only: bool = False,
        min_loop: int = 1,
        return_probabilities: bool = False,
    ) -> dict[str, Any]:
        sequence = outputs["sequence"]
        sequence = sequence[0] if isinstance(sequence, list) else sequence
        length = len(sequence)
        probabilities = outputs["probabilities"][0, :length, :length].cpu().numpy()
        folded = fold_probabilities(
            probabilities,
            sequence,
            threshold=self.model.config.ss_threshold if threshold is None else threshold,
            canonical_only=canonical_only,
            min_loop=min_loop,
        )
        try:
            dot_bracket = folded.structure.to_dot_bracket()
        except (
            ValueError
        ) as error:  # crossings nested deeper than dot-bracket's bracket kinds; `pairs` has them
            dot_bracket = None
            shown = sequence if length <= 30 else f"{sequence[:30]}..."
            logger.warning(
                f"The structure predicted for {shown!r} ({length} nt) has {error} Its 'dot_bracket' is None; "
                "'pairs' holds all its pairs. A higher threshold keeps fewer, surer pairs."
            )
        result = {
            "sequence": sequence,
            "dot_bracket": dot_bracket,
            "pairs": list(folded.structure.pairs),
            "multiplets": folded.multiplets,
        }
        if return_probabilities:
            result["probabilities"] = probabilities
        return result


class StrictAutoModelForContactPrediction(AutoModelForContactPrediction):
    """[`AutoModelForContactPrediction`] loading through [`rnafm_hf.model_loading.load_model`]: the pipeline's model
    class, so that `pipeline(TASK, model=FOLDER)` refuses a damaged folder instead of filling in random weights."""

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *model_args: Any, **kwargs: Any):
        return load_model(pretrained_model_name_or_path, AutoModelForContactPrediction, *model_args, **kwargs)


def load_structure_pipeline(
    model: str | os.PathLike, device: str | int | torch.device | None = None, **model_kwargs: Any
) -> RnaSecondaryStructurePipeline:
    """`pipeline(TASK, model=model, device=device)`, with errors of its own: the folder is loaded strictly
    ([`rnafm_hf.model_loading.load_model`], in the dtype it stores unless `model_kwargs` say otherwise), and its
    errors come as they are rather than inside transformers' list of the classes it tried."""
    from transformers import AutoTokenizer, pipeline

    name = model_location(os.fspath(model))
    device = checked_device(device) if isinstance(device, (str, torch.device)) else device
    loaded = load_model(name, AutoModelForContactPrediction, **{"dtype": "auto", **model_kwargs})
    return pipeline(TASK, model=loaded, tokenizer=AutoTokenizer.from_pretrained(name), device=device)


def register_pipeline() -> None:
    """Make `pipeline("rna-secondary-structure", model=...)` known to transformers."""
    if TASK not in PIPELINE_REGISTRY.get_supported_tasks():
        PIPELINE_REGISTRY.register_pipeline(
            TASK, pipeline_class=RnaSecondaryStructurePipeline, pt_model=StrictAutoModelForContactPrediction
        )
