"""RNA-FM and mRNA-FM for Hugging Face transformers.

Importing the package registers the models and tokenizers with the transformers Auto classes:

```python
>>> import rnafm_hf
>>> from transformers import AutoConfig
>>> AutoConfig.for_model("rnafm").hidden_size
640

```
"""

from .auto import AutoModelForContactPrediction, register_auto_classes
from .configuration_rnafm import RnaFmConfig, RnaFmConfigError
from .conversion import add_remote_code
from .data_collators import DataCollatorForPairLabels, RnaFmDataCollatorForLanguageModeling
from .embedding import InvalidSequencesError, embed
from .embedding_store import EmbeddingStore, embed_to_folder, load_embeddings
from .model_loading import ModelFolderError, NonFiniteOutputError
from .modeling_rnafm import (
    RnaFmContactPredictionOutput,
    RnaFmForContactPrediction,
    RnaFmForMaskedLM,
    RnaFmForSecondaryStructure,
    RnaFmForSequenceClassification,
    RnaFmForTokenClassification,
    RnaFmModel,
    RnaFmPreTrainedModel,
    RnaFmSecondaryStructureOutput,
)
from .original_checkpoint import (
    CheckpointError,
    load_original_checkpoint,
    read_original,
    read_original_checkpoint,
)
from .pipeline import RnaSecondaryStructurePipeline, register_pipeline
from .tokenization_rnafm import RnaFmCodonTokenizer, RnaFmTokenizer, UnknownResidueWarning

__version__ = "0.1.0"

register_auto_classes()
register_pipeline()

__all__ = [
    "AutoModelForContactPrediction",
    "CheckpointError",
    "DataCollatorForPairLabels",
    "EmbeddingStore",
    "InvalidSequencesError",
    "ModelFolderError",
    "NonFiniteOutputError",
    "RnaFmCodonTokenizer",
    "RnaFmConfig",
    "RnaFmConfigError",
    "RnaFmContactPredictionOutput",
    "RnaFmSecondaryStructureOutput",
    "RnaFmDataCollatorForLanguageModeling",
    "RnaFmForContactPrediction",
    "RnaFmForMaskedLM",
    "RnaFmForSecondaryStructure",
    "RnaFmForSequenceClassification",
    "RnaFmForTokenClassification",
    "RnaFmModel",
    "RnaFmPreTrainedModel",
    "RnaFmTokenizer",
    "RnaSecondaryStructurePipeline",
    "UnknownResidueWarning",
    "add_remote_code",
    "embed",
    "embed_to_folder",
    "load_embeddings",
    "load_original_checkpoint",
    "read_original",
    "read_original_checkpoint",
]
