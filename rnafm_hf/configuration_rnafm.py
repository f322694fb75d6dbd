"""Configuration of RNA-FM and mRNA-FM (ESM-1b-style RNA language models)."""

from __future__ import annotations

from typing import Any

from transformers import PreTrainedConfig

RNA_FM_PRESET: dict[str, Any] = {
    "vocab_size": 25,
    "hidden_size": 640,
    "num_hidden_layers": 12,
    "num_attention_heads": 20,
    "intermediate_size": 5120,
    "emb_layer_norm_before": True,
    "mask_token_id": 24,
    "k_mer": 1,
}
MRNA_FM_PRESET: dict[str, Any] = {
    "vocab_size": 73,
    "hidden_size": 1280,
    "num_hidden_layers": 12,
    "num_attention_heads": 20,
    "intermediate_size": 5120,
    "emb_layer_norm_before": False,
    "mask_token_id": 72,
    "k_mer": 3,
}
CLASSIFIER_POOLINGS = ("mean", "cls")
HIDDEN_ACTS = ("gelu", "gelu_python")
# Whole numbers of at least 1, and (COUNTS) of at least 0.
POSITIVE_SIZES = (
    "vocab_size",
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
    "max_position_embeddings",
    "ss_head_reduction",
    "ss_head_channels",
)
COUNTS = ("chunk_size_feed_forward", "ss_head_blocks")  # 0 or more
PROBABILITIES = (
    "hidden_dropout_prob",
    "attention_probs_dropout_prob",
    "ss_head_dropout",
    "classifier_dropout",
    "ss_threshold",
)
FLAGS = ("emb_layer_norm_before", "token_dropout", "contact_head_trained")
TOKEN_IDS = ("pad_token_id", "bos_token_id", "eos_token_id", "unk_token_id", "mask_token_id")
OPTIONAL = ("classifier_dropout", "bos_token_id", "eos_token_id")  # may be None


class RnaFmConfigError(ValueError):
    """A field of an `RnaFmConfig` (or of a folder's `config.json`) holds a value the model cannot be built with."""


def _is_whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_real(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _refuse(name: str, value: Any, expected: str) -> None:
    raise RnaFmConfigError(f"RnaFmConfig {name} must be {expected}; got {value!r}.")


def check_values(config: RnaFmConfig) -> None:
    """Raise `RnaFmConfigError`, naming the field, its value and what it should be, for the first value the model
    cannot be built with (sizes, dropouts, thresholds, token ids and the choices among named options)."""
    for name in (*POSITIVE_SIZES, *COUNTS):
        value = getattr(config, name)
        least = 0 if name in COUNTS else 1
        if not _is_whole(value) or value < least:
            _refuse(name, value, f"a whole number of at least {least}")
    for name in PROBABILITIES:
        value = getattr(config, name)
        if not (value is None and name in OPTIONAL) and not (_is_real(value) and 0.0 <= value <= 1.0):
            _refuse(name, value, "a number between 0 and 1")
    for name, value in (
        ("layer_norm_eps", config.layer_norm_eps),
        ("initializer_range", config.initializer_range),
    ):
        if not _is_real(value) or not 0.0 < value < float("inf"):
            _refuse(name, value, "a positive number")
    for name in FLAGS:
        if not isinstance(getattr(config, name), bool):
            _refuse(name, getattr(config, name), "true or false")
    for name in TOKEN_IDS:
        value = getattr(config, name)
        if not (value is None and name in OPTIONAL) and not (
            _is_whole(value) and 0 <= value < config.vocab_size
        ):
            _refuse(name, value, f"a token id between 0 and vocab_size - 1 ({config.vocab_size - 1})")
    if config.max_position_embeddings < config.pad_token_id + 4:
        _refuse(
            "max_position_embeddings",
            config.max_position_embeddings,
            f"at least pad_token_id + 4 ({config.pad_token_id + 4}): position ids start after the padding id, "
            "and a sequence needs <cls>, one residue and <eos>",
        )
    if config.hidden_size % config.num_attention_heads != 0:
        raise RnaFmConfigError(
            f"RnaFmConfig hidden_size ({config.hidden_size}) must be a multiple of num_attention_heads "
            f"({config.num_attention_heads})."
        )
    if config.k_mer not in (1, 3):
        _refuse("k_mer", config.k_mer, "1 (nucleotides) or 3 (codons)")
    if config.hidden_act not in HIDDEN_ACTS:
        _refuse("hidden_act", config.hidden_act, f"one of {', '.join(HIDDEN_ACTS)}")
    if config.classifier_pooling not in CLASSIFIER_POOLINGS:
        _refuse("classifier_pooling", config.classifier_pooling, f"one of {', '.join(CLASSIFIER_POOLINGS)}")


class RnaFmConfig(PreTrainedConfig):
    r"""
    Configuration of an RNA-FM model. The defaults describe RNA-FM (Chen et al. 2022): 12 pre-LayerNorm
    transformer layers of width 640 over the 25-token nucleotide vocabulary. [`RnaFmConfig.mrna_fm`] gives the
    codon-level mRNA-FM setting. A value the model cannot be built with (a size below 1, a dropout above 1, a token
    id outside the vocabulary, ...) raises [`RnaFmConfigError`] naming the field, its value and what it should be.

    Args:
        vocab_size: number of tokens (25 for nucleotides, 73 for codons).
        hidden_size: width of the residual stream.
        num_hidden_layers: number of transformer layers.
        num_attention_heads: attention heads per layer.
        intermediate_size: width of the feed-forward layer.
        hidden_act: activation of the feed-forward layers and the LM head. `"gelu_python"` (the default) is the
            original's `x * 0.5 * (1 + erf(x / sqrt(2)))`, written as it writes it, so that the numbers come out
            bit-identical; `"gelu"` is torch's exact-erf GELU kernel, one pass instead of five over the 4x-wide
            intermediate (RNA-FM's feed-forward layers took 22% less time on a 2-core CPU), within ~1e-6 of the
            formula; `rnafm_hf.embed` uses it. The secondary-structure head can amplify such differences (by ~1e3 with random weights), so
            `"gelu_python"` stays the default.
        chunk_size_feed_forward: the feed-forward layers process at most this many tokens at a time (counted over
            the whole batch; 0 = all at once). The numbers change by rounding at most (the matrix library may sum
            in another order for fewer rows). Chunks keep the 4x-wide intermediate
            small (20 MB for 1024 tokens of RNA-FM), so the allocator reuses it instead of mapping fresh pages for
            every layer: on a 2-core CPU, 8192 tokens went through RNA-FM's feed-forward layers 7-17% faster.
        hidden_dropout_prob: dropout on the residual branches (training only).
        attention_probs_dropout_prob: dropout on the attention probabilities (training only).
        max_position_embeddings: rows of the learned position table; the original allocates
            `max_positions + pad_token_id + 1` = 1026 rows, so at most 1024 tokens (1022 residues + `<cls>` +
            `<eos>`) fit.
        layer_norm_eps: epsilon of every LayerNorm.
        emb_layer_norm_before: LayerNorm the embeddings before the first layer (RNA-FM yes, mRNA-FM no).
        token_dropout: zero `<mask>` embeddings and rescale by the observed mask ratio, as the original does in
            training *and* inference.
        k_mer: residues per token (1 for RNA-FM, 3 for the codon tokens of mRNA-FM).
        contact_head_trained: whether the contact-regression weights were trained on contacts. The released
            checkpoints were pretrained with masked-LM only, so this stays `False` until you fine-tune and set it.
        ss_head_reduction: width the last-layer embeddings are projected to before the pairwise concatenation of
            the secondary-structure head ([`RnaFmForSecondaryStructure`]).
        ss_head_channels: channels of that head's residual blocks.
        ss_head_blocks: number of residual blocks (dilations 1, 2, 4, 1, 2, 4, ...).
        ss_head_dropout: dropout inside each residual block (training only).
        ss_threshold: pairing probability above which a pair becomes a candidate when a structure is read off
            the map; 0.33993712 is the value the original prediction script uses for the PDB-All head.
        conversion_sources: where `rnafm-hf convert` took the settings an original file may not store
            (`token_dropout`, `num_attention_heads`, `ss_threshold`), in words; a value no file gave starts with
            "ASSUMED". None for models not converted from an original file.
        classifier_pooling: how [`RnaFmForSequenceClassification`] summarises a sequence: `"mean"` averages the
            last-layer rows of the nucleotides (or codons) only, leaving out `<cls>`, `<eos>` and padding;
            `"cls"` takes the `<cls>` row. RNA-FM was pretrained with masked-LM only, so `<cls>` was never
            trained to summarise anything; `"mean"` is the default. (The original RNA-type tutorial averages
            something else: all 1024 rows of a zero-filled array holding `<cls>`, the nucleotides, `<eos>` and
            its batch's padding rows; `examples/rna_type_classification.py --protocol tutorial-probe` redoes it.)
        classifier_dropout: dropout of the sequence- and token-classification heads (defaults to
            `hidden_dropout_prob`).

    Example:

    ```python
    >>> from rnafm_hf import RnaFmConfig
    >>> RnaFmConfig().hidden_size
    640
    >>> RnaFmConfig.mrna_fm().vocab_size
    73

    ```
    """

    model_type = "rnafm"

    vocab_size: int = 25
    hidden_size: int = 640
    num_hidden_layers: int = 12
    num_attention_heads: int = 20
    intermediate_size: int = 5120
    hidden_act: str = "gelu_python"
    chunk_size_feed_forward: int = 1024
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    max_position_embeddings: int = 1026
    initializer_range: float = 0.02
    layer_norm_eps: float = 1e-5
    emb_layer_norm_before: bool = True
    token_dropout: bool = True
    k_mer: int = 1
    contact_head_trained: bool = False
    ss_head_reduction: int = 128
    ss_head_channels: int = 64
    ss_head_blocks: int = 32
    ss_head_dropout: float = 0.3
    ss_threshold: float = 0.33993712
    conversion_sources: dict[str, str] | None = None
    classifier_pooling: str = "mean"
    classifier_dropout: float | None = None
    pad_token_id: int | None = 1
    bos_token_id: int | None = 0
    eos_token_id: int | None = 2
    unk_token_id: int = 3
    mask_token_id: int = 24
    tie_word_embeddings: bool = True

    def __post_init__(self, **kwargs):
        check_values(self)
        super().__post_init__(**kwargs)
        # AutoModelForContactPrediction chooses between our two pair models by `architectures`, and transformers'
        # chooser cannot read None there.
        if self.architectures is None:
            self.architectures = []

    @property
    def max_tokens(self) -> int:
        """Longest input the position table allows, `<cls>` and `<eos>` included (1024 for RNA-FM)."""
        return self.max_position_embeddings - self.pad_token_id - 1

    @classmethod
    def rna_fm(cls, **overrides: Any) -> RnaFmConfig:
        """The RNA-FM setting (the defaults), with any field overridden."""
        return cls(**{**RNA_FM_PRESET, **overrides})

    @classmethod
    def mrna_fm(cls, **overrides: Any) -> RnaFmConfig:
        """The mRNA-FM setting: codon vocabulary of 73 tokens, width 1280, no embedding LayerNorm."""
        return cls(**{**MRNA_FM_PRESET, **overrides})


__all__ = ["RnaFmConfig", "RnaFmConfigError"]
