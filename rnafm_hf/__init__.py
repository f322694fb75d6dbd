"""RNA-FM and mRNA-FM for Hugging Face transformers.

Importing the package registers the models and tokenizers with the transformers Auto classes:

```python
>>> import rnafm_hf
>>> from transformers import AutoConfig
>>> AutoConfig.for_model("rnafm").hidden_size
640

```
"""

import importlib
import sys

__version__ = "0.1.0"

# Public names, each from the module that defines it; loaded when first used.
_EXPORTS = {
    "auto": ["AutoModelForContactPrediction", "register_auto_classes"],
    "configuration_rnafm": ["RnaFmConfig", "RnaFmConfigError"],
    "conversion": ["add_remote_code"],
    "data_collators": ["DataCollatorForPairLabels", "RnaFmDataCollatorForLanguageModeling"],
    "embedding": ["InvalidSequencesError", "embed"],
    "embedding_store": ["EmbeddingStore", "embed_to_folder", "load_embeddings"],
    "model_loading": ["ModelFolderError", "NonFiniteOutputError"],
    "modeling_rnafm": [
        "RnaFmContactPredictionOutput",
        "RnaFmSecondaryStructureOutput",
        "RnaFmForContactPrediction",
        "RnaFmForMaskedLM",
        "RnaFmForSecondaryStructure",
        "RnaFmForSequenceClassification",
        "RnaFmForTokenClassification",
        "RnaFmModel",
        "RnaFmPreTrainedModel",
    ],
    "original_checkpoint": [
        "CheckpointError",
        "load_original_checkpoint",
        "read_original",
        "read_original_checkpoint",
    ],
    "pipeline": ["RnaSecondaryStructurePipeline", "register_pipeline"],
    "scoring": ["score"],
    "tokenization_rnafm": ["RnaFmCodonTokenizer", "RnaFmTokenizer", "UnknownResidueWarning"],
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}


def __getattr__(name: str):
    if name not in _MODULE_OF:
        raise AttributeError(f"module 'rnafm_hf' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_MODULE_OF[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_MODULE_OF])


def register() -> None:
    """Register the configuration, models, tokenizers and the structure pipeline with transformers (what
    `import rnafm_hf` does; the `rnafm-hf` command does it only once its arguments are checked)."""
    from .auto import register_auto_classes
    from .pipeline import register_pipeline

    register_auto_classes()
    register_pipeline()


def _started_as_the_command() -> bool:
    """`rnafm-hf ...` or `python -m rnafm_hf ...`: the command registers once its arguments are checked, so that
    `--help` and argument errors answer without importing torch and transformers."""
    options = iter(getattr(sys, "orig_argv", [])[1:])
    for option in options:  # the interpreter's own options, up to the module, command or script
        if option == "-m":
            return next(options, None) == __name__
        if option in ("-X", "-W"):  # options that take a value
            next(options, None)
        elif option == "-c" or not option.startswith("-"):
            break
    program = sys.argv[0] if sys.argv else ""
    return program.rsplit("/", 1)[-1].removesuffix(".exe") == "rnafm-hf"


if not _started_as_the_command():
    register()

__all__ = ["register", *sorted(_MODULE_OF)]
