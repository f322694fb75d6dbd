"""Auto classes that transformers lacks, and the registration of RNA-FM with the Auto* factories."""

from __future__ import annotations

from collections import OrderedDict

from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForMaskedLM,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    AutoTokenizer,
)
from transformers.models.auto.auto_factory import _BaseAutoModelClass, _LazyAutoMapping

from .configuration_rnafm import RnaFmConfig
from .modeling_rnafm import (
    RnaFmForContactPrediction,
    RnaFmForMaskedLM,
    RnaFmForSecondaryStructure,
    RnaFmForSequenceClassification,
    RnaFmForTokenClassification,
    RnaFmModel,
)
from .tokenization_rnafm import RnaFmCodonTokenizer, RnaFmTokenizer


class AutoModelForContactPrediction(_BaseAutoModelClass):
    """
    Auto class for residue-pair prediction models, which transformers has none of. For RNA-FM it builds the model a
    folder's config names: [`RnaFmForSecondaryStructure`] for a converted secondary-structure checkpoint, the
    ESM-style [`RnaFmForContactPrediction`] otherwise.

    Example:

    ```python
    >>> import rnafm_hf
    >>> model = rnafm_hf.AutoModelForContactPrediction.from_pretrained("rna-fm")  # doctest: +SKIP

    ```
    """

    _model_mapping = _LazyAutoMapping(OrderedDict(), OrderedDict())


def register_auto_classes() -> None:
    """Make `AutoConfig`, `AutoTokenizer`, `AutoModel`, `AutoModelForMaskedLM`, the sequence- and
    token-classification Auto classes and ours know RNA-FM."""
    AutoConfig.register(RnaFmConfig.model_type, RnaFmConfig, exist_ok=True)
    # Both tokenizers become known by name (a saved `tokenizer_config.json` names the right one);
    # the nucleotide tokenizer, registered last, is the default for the config.
    AutoTokenizer.register(RnaFmConfig, tokenizer_class=RnaFmCodonTokenizer, exist_ok=True)
    AutoTokenizer.register(RnaFmConfig, tokenizer_class=RnaFmTokenizer, exist_ok=True)
    AutoModel.register(RnaFmConfig, RnaFmModel, exist_ok=True)
    AutoModelForMaskedLM.register(RnaFmConfig, RnaFmForMaskedLM, exist_ok=True)
    AutoModelForSequenceClassification.register(RnaFmConfig, RnaFmForSequenceClassification, exist_ok=True)
    AutoModelForTokenClassification.register(RnaFmConfig, RnaFmForTokenClassification, exist_ok=True)
    # Two pair models share one config: transformers picks from such a tuple by the config's `architectures`,
    # falling back to the first.
    AutoModelForContactPrediction._model_mapping.register(
        RnaFmConfig, (RnaFmForContactPrediction, RnaFmForSecondaryStructure), exist_ok=True
    )
