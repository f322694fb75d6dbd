"""PyTorch RNA-FM: the ESM-1b-style RNA language model of Chen et al. (2022), in the transformers idiom.

The computation reproduces the original `fm.BioBertModel` step by step (see `tests/test_parity.py`):
learned positions counted over non-pad tokens, optional embedding LayerNorm, pre-LayerNorm layers with the query
scaled before the dot product and the softmax in float32, a final LayerNorm, and a RoBERTa-style LM head tied to
the token embeddings. Layer parameters keep the original names (`self_attn.q_proj`, `fc1`, ...).

The plumbing is transformers': its attention interface (eager, SDPA, flex and flash attention; the first three
wrapped to read packed batches, see `packing_rnafm.py`), mask utilities, output recording and initialisation. The
layers are not transformers' ESM modules, although `EsmForMaskedLM` computes the same numbers on the same weights:
ESM names its parameters otherwise (`attention.self.query`, `intermediate.dense`, a LayerNorm inside its attention
block), so converted folders and Hub repositories would change or need renaming at every load, and it has no
packed batches, no original GELU formula and no per-sequence attention maps zeroed on padding, which RNA-FM needs.
"""

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.masking_utils import create_bidirectional_mask
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import (
    BaseModelOutput,
    MaskedLMOutput,
    ModelOutput,
    SequenceClassifierOutput,
    TokenClassifierOutput,
)
from transformers.modeling_utils import AttentionInterface
from transformers.processing_utils import Unpack
from transformers.utils import TransformersKwargs, can_return_tuple, logging
from transformers.utils.output_capturing import OutputRecorder, capture_outputs

from .configuration_rnafm import RnaFmConfig
from .losses_rnafm import check_no_labels_outside, pair_loss, sequence_labels
from .packing_rnafm import (
    PackedSequences,
    check_position_ids,
    read_packing,
    within_packed_sequences,
)

logger = logging.get_logger(__name__)

# Token dropout replays the masking statistics of pretraining: 15% of tokens selected, 80% of those masked.
MASK_RATIO_TRAIN = 0.15 * 0.8
UNTRAINED_CONTACT_HEAD_WARNING = (
    "The contact-regression weights of this checkpoint were never trained on contacts (RNA-FM and mRNA-FM were "
    "pretrained with masked-LM only), so the contact probabilities are meaningless until the head is fine-tuned. "
    "After fine-tuning, set `model.config.contact_head_trained = True` before `save_pretrained`."
)


def position_ids_from_attention_mask(attention_mask: torch.Tensor, padding_idx: int) -> torch.Tensor:
    """Positions as the original counts them: the n-th real token gets `padding_idx + n`, padding gets `padding_idx`."""
    mask = attention_mask.long()
    return torch.cumsum(mask, dim=1) * mask + padding_idx


def symmetrize(x: torch.Tensor) -> torch.Tensor:
    """Make the last two dimensions symmetric."""
    return x + x.transpose(-1, -2)


def average_product_correct(x: torch.Tensor) -> torch.Tensor:
    """Average product correction (APC) of contact maps."""
    a1 = x.sum(-1, keepdim=True)
    a2 = x.sum(-2, keepdim=True)
    a12 = x.sum((-1, -2), keepdim=True)
    # An all-zero map (an empty sequence) has a1 = a2 = 0: its correction is 0, not 0 / 0 (NaN, in the gradients
    # too). Other maps keep their exact numbers.
    return x - a1 * a2 / a12.masked_fill(a12 == 0, 1)


def residue_mask_of(
    input_ids: torch.Tensor | None,
    attention_mask: torch.Tensor | None,
    hidden: torch.Tensor,
    config: RnaFmConfig,
    bounds: torch.Tensor | None = None,
) -> torch.Tensor:
    """True on residues: not padding, `<cls>` or `<eos>` (found by id, or by place without input_ids: the first
    and last token of each row, or of each packed sequence within `bounds`)."""
    if input_ids is not None:
        mask = input_ids.ne(config.pad_token_id) if attention_mask is None else attention_mask.bool()
        return mask & input_ids.ne(config.eos_token_id) & input_ids.ne(config.bos_token_id)
    mask = (
        torch.ones(hidden.shape[:2], dtype=torch.bool, device=hidden.device)
        if attention_mask is None
        else attention_mask.bool().clone()
    )
    if bounds is not None:
        bounds = bounds.long().to(mask.device)
        mask[0, bounds[:-1]] = False
        mask[0, bounds[1:] - 1] = False
        return mask
    last = mask.long().sum(-1) - 1
    mask[:, 0] = False
    mask[torch.arange(mask.shape[0], device=mask.device), last] = False
    return mask


def upper_triangle_symmetrized(x: torch.Tensor) -> torch.Tensor:
    """Mirror the upper triangle (diagonal included) of the last two dimensions onto the lower one."""
    return torch.triu(x) + torch.triu(x, diagonal=1).transpose(-1, -2)


def pool_sequence(
    hidden: torch.Tensor, residue_mask: torch.Tensor, attention_mask: torch.Tensor | None, pooling: str
) -> torch.Tensor:
    """One vector per sequence: the mean of the residue rows (`"mean"`) or the `<cls>` row (`"cls"`)."""
    if pooling == "mean":
        weights = residue_mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1)
    if pooling != "cls":
        raise ValueError(f"classifier_pooling must be 'mean' or 'cls', got {pooling!r}.")
    if attention_mask is not None and not attention_mask[:, 0].bool().all():
        raise ValueError(
            "<cls> pooling reads the first row, which is padding in a left-padded batch: pad on the right "
            "(tokenizer.padding_side = 'right')."
        )
    return hidden[:, 0]


def eager_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float = 1.0,
    **kwargs,
) -> tuple[torch.Tensor, torch.Tensor]:
    """
    Plain attention with the softmax in float32, as the original. `attention_mask` is transformers' 4-D mask,
    boolean (True = attend) or additive. The weights returned, zero on the rows of padding tokens as the original
    reports them, are part of the output's graph, so attribution methods get their gradient.
    """
    scores = torch.matmul(query, key.transpose(2, 3)) * scaling
    if attention_mask is not None:
        if attention_mask.dtype == torch.bool:
            scores = scores.masked_fill(~attention_mask, float("-inf"))
            is_key = attention_mask[..., :1, :]
        else:
            scores = scores + attention_mask
            is_key = attention_mask[..., :1, :] == 0
    probs = weights = F.softmax(scores, dim=-1, dtype=torch.float32).to(value.dtype)
    if attention_mask is not None:
        # The weights returned are zero on padding rows (self-attention: the padded keys are the padded queries);
        # the output is computed from them plus those rows, which the original computes too: the same numbers,
        # and the returned tensor is in the graph.
        is_query = is_key.transpose(-1, -2)
        weights = probs * is_query
        probs = weights + probs * ~is_query
    output = torch.matmul(F.dropout(probs, p=dropout, training=module.training), value)
    return output.transpose(1, 2).contiguous(), weights


# transformers' attention functions, with eager, SDPA and flex attention made to read packed batches: a local
# override, as AttentionInterface provides for (flash attention reads packing itself and stays as it is).
ALL_ATTENTION_FUNCTIONS = AttentionInterface()
ALL_ATTENTION_FUNCTIONS["eager"] = within_packed_sequences(eager_attention_forward)
for _name in ("sdpa", "flex_attention"):
    ALL_ATTENTION_FUNCTIONS[_name] = within_packed_sequences(ALL_ATTENTION_FUNCTIONS[_name])


class RnaFmEmbeddings(nn.Module):
    """Token embeddings (with the original token dropout), learned positions and the optional embedding LayerNorm."""

    def __init__(self, config: RnaFmConfig):
        super().__init__()
        self.word_embeddings = nn.Embedding(
            config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id
        )
        self.position_embeddings = nn.Embedding(
            config.max_position_embeddings, config.hidden_size, padding_idx=config.pad_token_id
        )
        self.layer_norm = (
            nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
            if config.emb_layer_norm_before
            else None
        )
        self.padding_idx = config.pad_token_id
        self.mask_token_id = config.mask_token_id
        self.token_dropout = config.token_dropout

    def forward(
        self,
        input_ids: torch.Tensor | None,
        attention_mask: torch.Tensor,
        position_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        packed: PackedSequences | None = None,
    ) -> torch.Tensor:
        if inputs_embeds is None:
            inputs_embeds = self.word_embeddings(input_ids)
        embeddings = inputs_embeds
        if self.token_dropout:
            # Applied in eval mode too: the original always rescales by the observed mask ratio. Given embeddings
            # alone, no row can be told to be <mask>: none is taken as masked, so `inputs_embeds` built from
            # `get_input_embeddings()(input_ids)` give what those input_ids give when they hold no <mask>.
            is_mask = (
                input_ids == self.mask_token_id
                if input_ids is not None
                else torch.zeros(inputs_embeds.shape[:2], dtype=torch.bool, device=inputs_embeds.device)
            )
            embeddings = embeddings.masked_fill(is_mask.unsqueeze(-1), 0.0)
            if packed is None:
                mask_ratio_observed = (is_mask.sum(-1).float() / attention_mask.sum(-1))[:, None, None]
            else:  # per packed sequence, spread over its tokens
                masks = torch.zeros(len(packed), device=is_mask.device).index_add_(
                    0, packed.segment_ids, is_mask[0].float()
                )
                mask_ratio_observed = (masks / packed.lengths)[packed.segment_ids][None, :, None]
            # The original's order of operations, so that the rounding matches too.
            embeddings = embeddings * (1 - MASK_RATIO_TRAIN) / (1 - mask_ratio_observed)
            embeddings = embeddings.to(inputs_embeds.dtype)
        if position_ids is None and packed is not None:
            position_ids = (packed.offsets + self.padding_idx + 1)[None]
        elif position_ids is None:
            position_ids = position_ids_from_attention_mask(attention_mask, self.padding_idx)
        embeddings = embeddings + self.position_embeddings(position_ids)
        if self.layer_norm is not None:
            embeddings = self.layer_norm(embeddings)
        return embeddings * attention_mask.unsqueeze(-1).to(embeddings.dtype)


class RnaFmSelfAttention(nn.Module):
    """Multi-head self-attention through transformers' attention interface (eager, SDPA, flex or flash attention),
    with the query scaled by head_dim^-0.5 before the dot product, as in the original."""

    def __init__(self, config: RnaFmConfig):
        super().__init__()
        self.config = config
        self.num_heads = config.num_attention_heads
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.scaling = self.head_dim**-0.5
        self.dropout = config.attention_probs_dropout_prob
        self.is_causal = False
        self.q_proj = nn.Linear(config.hidden_size, config.hidden_size)
        self.k_proj = nn.Linear(config.hidden_size, config.hidden_size)
        self.v_proj = nn.Linear(config.hidden_size, config.hidden_size)
        self.out_proj = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        batch_size, length, _ = hidden_states.shape
        shape = (batch_size, length, self.num_heads, self.head_dim)
        query = (self.q_proj(hidden_states) * self.scaling).view(shape).transpose(1, 2)
        key = self.k_proj(hidden_states).view(shape).transpose(1, 2)
        value = self.v_proj(hidden_states).view(shape).transpose(1, 2)

        # Attention probabilities exist only in the eager computation, so asking for them selects it.
        implementation = "eager" if kwargs.get("output_attentions") else self.config._attn_implementation
        attention_interface = ALL_ATTENTION_FUNCTIONS.get_interface(implementation, eager_attention_forward)
        output, probs = attention_interface(
            self,
            query,
            key,
            value,
            attention_mask,
            dropout=self.dropout if self.training else 0.0,
            scaling=1.0,
            **kwargs,
        )
        return self.out_proj(output.reshape(batch_size, length, -1)), probs


class RnaFmLayer(GradientCheckpointingLayer):
    """Pre-LayerNorm transformer layer: x + MHA(LN(x)), then x + fc2(gelu(fc1(LN(x))))."""

    def __init__(self, config: RnaFmConfig):
        super().__init__()
        self.self_attn_layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.self_attn = RnaFmSelfAttention(config)
        self.final_layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.fc1 = nn.Linear(config.hidden_size, config.intermediate_size)
        self.activation = ACT2FN[config.hidden_act]
        self.fc2 = nn.Linear(config.intermediate_size, config.hidden_size)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.chunk_size_feed_forward = config.chunk_size_feed_forward

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> torch.Tensor:
        attention_output, _ = self.self_attn(
            self.self_attn_layer_norm(hidden_states), attention_mask, **kwargs
        )
        hidden_states = hidden_states + self.dropout(attention_output)
        return hidden_states + self.dropout(self.chunked_feed_forward(hidden_states))

    def feed_forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.activation(self.fc1(self.final_layer_norm(hidden_states))))

    def chunked_feed_forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """`feed_forward` over at most `chunk_size_feed_forward` tokens at a time (of all sequences together)."""
        tokens = hidden_states.reshape(-1, hidden_states.shape[-1])
        if not 0 < self.chunk_size_feed_forward < len(tokens):
            return self.feed_forward(hidden_states)
        chunks = [self.feed_forward(chunk) for chunk in tokens.split(self.chunk_size_feed_forward)]
        return torch.cat(chunks).view_as(hidden_states)


class RnaFmEncoder(nn.Module):
    """The stack of layers and the final LayerNorm (`emb_layer_norm_after`)."""

    def __init__(self, config: RnaFmConfig):
        super().__init__()
        self.layers = nn.ModuleList([RnaFmLayer(config) for _ in range(config.num_hidden_layers)])
        self.emb_layer_norm_after = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> torch.Tensor:
        for layer in self.layers:
            hidden_states = layer(hidden_states, attention_mask, **kwargs)
        return self.emb_layer_norm_after(hidden_states)


class RnaFmLMHead(nn.Module):
    """RoBERTa-style masked-LM head: dense -> gelu -> LayerNorm -> projection tied to the token embeddings + bias."""

    def __init__(self, config: RnaFmConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.decoder = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))
        self.activation = ACT2FN[config.hidden_act]

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.layer_norm(self.activation(self.dense(features)))) + self.bias

    def resize_bias(self, vocab_size: int) -> None:
        """Follow a resized vocabulary: the bias of tokens kept stays, new tokens start at 0."""
        kept = min(vocab_size, len(self.bias))
        bias = self.bias.detach().new_zeros(vocab_size)
        bias[:kept] = self.bias.detach()[:kept]
        self.bias = nn.Parameter(bias, requires_grad=self.bias.requires_grad)


class RnaFmContactPredictionHead(nn.Module):
    """ESM-style contact head: symmetrised, APC-corrected attention maps of all layers -> logistic regression."""

    def __init__(self, config: RnaFmConfig):
        super().__init__()
        self.regression = nn.Linear(config.num_hidden_layers * config.num_attention_heads, 1)

    def forward(self, attentions: tuple[torch.Tensor, ...], residue_mask: torch.Tensor) -> torch.Tensor:
        """`attentions`: one (batch, heads, T, T) map per layer; returns logits (batch, T - 2, T - 2)."""
        maps = torch.cat(attentions, dim=1)
        pair_mask = residue_mask[:, None, :, None] & residue_mask[:, None, None, :]
        maps = (maps * pair_mask.to(maps.dtype))[..., 1:-1, 1:-1]
        features = average_product_correct(symmetrize(maps.to(self.regression.weight.dtype)))
        return self.regression(features.permute(0, 2, 3, 1)).squeeze(-1)


def masked(x: torch.Tensor, pair_mask: torch.Tensor | None) -> torch.Tensor:
    """Zero the pairs outside each sequence, so a 3x3 convolution sees there the zeros of its own padding."""
    return x if pair_mask is None else x * pair_mask


class RnaFmResidualBlock(nn.Module):
    """One block of the secondary-structure ResNet: BN -> ReLU -> conv 3x3 -> dropout -> ReLU -> dilated conv 3x3,
    plus the identity (no conv biases)."""

    def __init__(self, channels: int, dilation: int, dropout: float):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv1 = nn.Conv2d(channels, channels, kernel_size=3, padding=1, bias=False)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(
            channels, channels, kernel_size=3, padding=dilation, dilation=dilation, bias=False
        )

    def forward(self, x: torch.Tensor, pair_mask: torch.Tensor | None) -> torch.Tensor:
        out = self.conv1(masked(F.relu(self.bn1(x)), pair_mask))
        out = self.conv2(masked(F.relu(self.dropout(out)), pair_mask))
        return x + out


class RnaFmSecondaryStructureHead(nn.Module):
    """
    RNA-FM's published secondary-structure head (the original `PairwiseConcatWithResNet`): last-layer residue
    embeddings -> linear reduction -> pairwise concatenation [e_i, e_j] -> 1x1 conv -> dilated residual blocks ->
    3x3 conv to one channel -> upper triangle mirrored. Returns pair logits (batch, L, L).
    """

    def __init__(self, config: RnaFmConfig):
        super().__init__()
        channels = config.ss_head_channels
        self.reduction = nn.Linear(config.hidden_size, config.ss_head_reduction)
        self.pair_projection = nn.Conv2d(2 * config.ss_head_reduction, channels, kernel_size=1)
        self.blocks = nn.ModuleList(
            RnaFmResidualBlock(channels, dilation=2 ** (k % 3), dropout=config.ss_head_dropout)
            for k in range(config.ss_head_blocks)
        )
        self.output = nn.Conv2d(channels, 1, kernel_size=3, padding=1)

    def forward(self, embeddings: torch.Tensor, residue_mask: torch.Tensor) -> torch.Tensor:
        """`embeddings` (batch, L, hidden): residues only, zero where `residue_mask` (batch, L) is False."""
        reduced = self.reduction(embeddings)
        length = reduced.shape[1]
        if length == 0:  # only empty sequences: an empty (batch, 0, 0) map, still in the graph
            return reduced[..., :0]
        rows = reduced[:, :, None, :].expand(-1, -1, length, -1)
        # [e_i, e_j] for every pair, laid out as the original lays it out: the 1x1 convolution then sums in the
        # same order, and the map comes out bit-identical (an outer sum of two half-projections would save this
        # tensor but drifts by ~1e-6 of the logits' scale per block).
        x = self.pair_projection(torch.cat([rows, rows.transpose(1, 2)], dim=-1).permute(0, 3, 1, 2))
        pair_mask = None
        if not residue_mask.all():
            pair_mask = (residue_mask[:, None, :, None] & residue_mask[:, None, None, :]).to(x.dtype)
        return upper_triangle_symmetrized(self.pair_logits(x, pair_mask))

    def pair_logits(self, x: torch.Tensor, pair_mask: torch.Tensor | None = None) -> torch.Tensor:
        """The residual blocks and the output convolution over projected pairs `x` (batch, channels, rows,
        columns): logits (batch, rows, columns), not yet mirrored (`rnafm_hf.long_folding` runs it tile by tile)."""
        for block in self.blocks:
            x = block(x, pair_mask)
        return self.output(masked(x, pair_mask)).squeeze(1)


class RnaFmClassificationHead(nn.Module):
    """Sequence-level head, as ESM's and RoBERTa's: dropout -> dense -> tanh -> dropout -> projection to the labels.

    The projection is called `output`, not `out_proj` as there, so that LoRA's `target_modules=[..., "out_proj"]`
    reaches the attention projections only."""

    def __init__(self, config: RnaFmConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.dropout = nn.Dropout(classifier_dropout_of(config))
        self.output = nn.Linear(config.hidden_size, config.num_labels)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        x = torch.tanh(self.dense(self.dropout(pooled)))
        return self.output(self.dropout(x))


def classifier_dropout_of(config: RnaFmConfig) -> float:
    return config.hidden_dropout_prob if config.classifier_dropout is None else config.classifier_dropout


class RnaFmPreTrainedModel(PreTrainedModel):
    """Weight initialisation, gradient checkpointing and attention-backend support shared by all RNA-FM models."""

    config_class = RnaFmConfig
    config: RnaFmConfig
    base_model_prefix = "rnafm"
    supports_gradient_checkpointing = True
    _no_split_modules = ["RnaFmLayer", "RnaFmEmbeddings"]
    _supports_sdpa = True
    _supports_flex_attn = True
    _supports_flash_attn = True
    _supports_attention_backend = True
    # transformers records these for `output_hidden_states` / `output_attentions`: the embeddings and each layer's
    # output (the last one replaced by `last_hidden_state`, after the final LayerNorm, as the original reports it),
    # and the attention weights each layer computed with.
    _can_record_outputs = {
        "hidden_states": RnaFmLayer,
        "attentions": OutputRecorder(RnaFmSelfAttention, index=1),
    }

    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        if isinstance(module, RnaFmLMHead):
            init.zeros_(module.bias)
        # The original's initialisation of its downstream heads: Kaiming (fan-in) convolutions (the structure head
        # has the only ones) and a near-zero reduction. Set per module: transformers skips modules without
        # parameters of their own when initialising a model of custom code.
        elif isinstance(module, nn.Conv2d):
            init.kaiming_normal_(module.weight, mode="fan_in")
            if module.bias is not None:
                init.zeros_(module.bias)
        elif (
            isinstance(head := getattr(self, "ss_head", None), RnaFmSecondaryStructureHead)
            and module is head.reduction
        ):
            init.normal_(module.weight, std=0.001)
            init.zeros_(module.bias)

    def _refuse_packed_input(
        self,
        input_ids: torch.Tensor | None,
        inputs_embeds: torch.Tensor | None,
        attention_mask: torch.Tensor | None,
        position_ids: torch.Tensor | None,
        kwargs: dict,
        why: str,
    ) -> None:
        """Heads with an output per sequence take padded batches only: packed input would be read as one sequence."""
        _, source, _ = read_packing(
            input_ids, inputs_embeds, attention_mask, position_ids, kwargs, self.config.pad_token_id
        )
        if source is not None:
            raise ValueError(
                f"{type(self).__name__} takes padded batches: {why}, so it cannot read sequences packed into one "
                f"row ({source}, as DataCollatorWithFlattening marks them). Pad the batch instead: "
                "DataCollatorWithPadding, or rnafm_hf.DataCollatorForPairLabels for pair labels."
            )


class RnaFmModel(RnaFmPreTrainedModel):
    """
    The bare RNA-FM encoder: per-token representations (batch, tokens, hidden) with `<cls>` first and `<eos>`
    after the last residue.

    `hidden_states` (with `output_hidden_states=True`) holds the embeddings and the output of every layer; the
    last entry is taken after the final LayerNorm, like `last_hidden_state` and like the original's
    `repr_layers`. `attentions` (with `output_attentions=True`) holds one (batch, heads, T, T) map per layer,
    zero on padding rows and columns; asking for them runs the eager attention computation. They are the maps the
    layers computed (before attention dropout), not copies, so gradients flow through them into the model, as
    attribution methods need.

    Example:

    ```python
    >>> import torch
    >>> from rnafm_hf import RnaFmConfig, RnaFmModel, RnaFmTokenizer
    >>> model = RnaFmModel(RnaFmConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
    ...                                intermediate_size=64)).eval()
    >>> batch = RnaFmTokenizer()(["GGGUGCGAUC", "ACGU"], padding=True, return_tensors="pt")
    >>> with torch.no_grad():
    ...     out = model(**batch)
    >>> tuple(out.last_hidden_state.shape)
    (2, 12, 32)

    ```

    **Packed (padding-free) input.** Sequences of different lengths can also go end to end in one row, with
    `cu_seq_lens_q` giving their bounds: no token is spent on padding, each sequence attends to itself only and
    gets the numbers it gets alone (within float rounding). This is how `rnafm_hf.embed` runs the model. Every
    batch of transformers' `DataCollatorWithFlattening` works too: its bounds (`return_flash_attn_kwargs=True`),
    its `seq_idx`, or its position ids alone (the default), which restart at each sequence and so mark them.
    RNA-FM numbers the positions itself, as the original (`<cls>` at `padding_idx + 1`), whether the collator
    counts from 0 or from `position_ids_start`. The masked-LM and token-classification models take packed batches
    the same way; the models with one output per sequence or per pair refuse them.

    ```python
    >>> ids = RnaFmTokenizer()(["GGGUGCGAUC", "ACGU"])["input_ids"]  # 12 and 6 tokens
    >>> with torch.no_grad():
    ...     packed = model(input_ids=torch.tensor([ids[0] + ids[1]]), cu_seq_lens_q=torch.tensor([0, 12, 18]))
    >>> tuple(packed.last_hidden_state.shape)
    (1, 18, 32)
    >>> bool(torch.allclose(packed.last_hidden_state[0, 12:], out.last_hidden_state[1, :6], atol=1e-5))
    True

    ```
    """

    _keys_to_ignore_on_load_unexpected = [r"lm_head\.", r"contact_head\.", r"ss_head\.", r"classifier\."]

    def __init__(self, config: RnaFmConfig):
        super().__init__(config)
        self.embeddings = RnaFmEmbeddings(config)
        self.encoder = RnaFmEncoder(config)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embeddings.word_embeddings

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.embeddings.word_embeddings = value

    @capture_outputs
    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> BaseModelOutput:
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("Pass exactly one of input_ids or inputs_embeds.")
        output_attentions = kwargs.get("output_attentions")
        output_attentions = self.config.output_attentions if output_attentions is None else output_attentions
        kwargs["output_attentions"] = output_attentions

        reference = input_ids if input_ids is not None else inputs_embeds[..., 0]
        bounds, source, position_ids = read_packing(
            input_ids, inputs_embeds, attention_mask, position_ids, kwargs, self.config.pad_token_id
        )
        packed = None
        if bounds is None:
            self._check_length(reference.shape[1])
        else:
            self._check_packing(
                reference, bounds, source, attention_mask, position_ids, output_attentions, kwargs
            )
            packed = PackedSequences(bounds, reference.shape[1], self.config.max_tokens)
            kwargs.update(packed.attention_kwargs())
        if attention_mask is None:
            attention_mask = (
                input_ids.ne(self.config.pad_token_id)
                if input_ids is not None and packed is None
                else torch.ones(reference.shape, dtype=torch.long, device=reference.device)
            )
        if position_ids is not None and packed is None:
            check_position_ids(position_ids, attention_mask, self.config.pad_token_id)
        embeddings = self.embeddings(input_ids, attention_mask, position_ids, inputs_embeds, packed)
        mask = (
            None
            if packed is not None
            else self._attention_mask(embeddings, attention_mask, output_attentions)
        )
        return BaseModelOutput(last_hidden_state=self.encoder(embeddings, mask, **kwargs))

    def _attention_mask(
        self, embeddings: torch.Tensor, attention_mask: torch.Tensor, output_attentions: bool
    ) -> torch.Tensor | None:
        """transformers' bidirectional mask for the attention backend (None when nothing is padded: the fast SDPA
        kernels need none, and the original passes None too); eager's when the attention maps are asked for."""
        implementation = self.config._attn_implementation
        if output_attentions and implementation not in ("eager", "sdpa"):
            raise ValueError(
                f"output_attentions=True needs the eager attention computation, which {implementation!r} masks "
                "cannot feed: call model.set_attn_implementation('sdpa') (or 'eager') first."
            )
        return create_bidirectional_mask(
            config=self.config, inputs_embeds=embeddings, attention_mask=attention_mask
        )

    def _check_packing(
        self,
        reference: torch.Tensor,
        bounds: torch.Tensor,
        source: str,
        attention_mask: torch.Tensor | None,
        position_ids: torch.Tensor | None,
        output_attentions: bool,
        kwargs: dict,
    ) -> None:
        """Packed input is one row, unpadded, with positions derived from the sequence bounds."""
        problem = None
        if reference.shape[0] != 1:
            problem = f"a batch of {reference.shape[0]} rows; pack the sequences into one row instead"
        elif attention_mask is not None and not bool(attention_mask.all()):
            problem = "padding in attention_mask; packed sequences have none (pass no attention_mask)"
        elif position_ids is not None:
            problem = (
                "position_ids, which RNA-FM derives itself from the sequence bounds (with DataCollatorWithFlattening, "
                "pass return_position_ids=False)"
            )
        elif output_attentions:
            problem = (
                "output_attentions=True; attention maps of packed sequences are not returned, unpack them"
            )
        elif (bounds_k := kwargs.get("cu_seq_lens_k")) is not None and not torch.equal(
            bounds_k.cpu(), bounds.cpu()
        ):
            problem = f"cu_seq_lens_k different from {source}; RNA-FM attends within each sequence"
        if problem is not None:
            raise ValueError(f"Packed input ({source}) with {problem}.")

    def _check_length(self, length: int) -> None:
        limit = self.config.max_tokens
        if length > limit:
            unit = "codons" if self.config.k_mer == 3 else "nucleotides"
            raise ValueError(
                f"The input has {length} tokens, but RNA-FM's position table holds at most {limit} "
                f"({limit - 2} {unit} plus <cls> and <eos>). Truncate with tokenizer(..., truncation=True), "
                "or split long sequences into windows."
            )


class RnaFmForMaskedLM(RnaFmPreTrainedModel):
    """
    RNA-FM with its masked-language-model head (the pretraining objective). `labels` (batch, tokens) with -100
    on positions to ignore give the usual cross-entropy loss. Packed (padding-free) batches, as
    `DataCollatorWithFlattening` makes them, give each sequence its own logits (see [`RnaFmModel`]).

    Example:

    ```python
    >>> import torch
    >>> from rnafm_hf import RnaFmConfig, RnaFmForMaskedLM, RnaFmTokenizer
    >>> model = RnaFmForMaskedLM(RnaFmConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
    ...                                      intermediate_size=64)).eval()
    >>> batch = RnaFmTokenizer()(["ACG<mask>U"], return_tensors="pt")
    >>> tuple(model(**batch).logits.shape)
    (1, 7, 25)

    ```
    """

    _tied_weights_keys = {"lm_head.decoder.weight": "rnafm.embeddings.word_embeddings.weight"}
    _keys_to_ignore_on_load_unexpected = [r"contact_head\.", r"ss_head\.", r"classifier\."]

    def __init__(self, config: RnaFmConfig):
        super().__init__(config)
        self.rnafm = RnaFmModel(config)
        self.lm_head = RnaFmLMHead(config)
        self.post_init()

    def get_output_embeddings(self) -> nn.Linear:
        return self.lm_head.decoder

    def set_output_embeddings(self, new_embeddings: nn.Linear) -> None:
        self.lm_head.decoder = new_embeddings

    def resize_token_embeddings(self, *args, **kwargs) -> nn.Embedding:
        """transformers' resizing, with the LM head's bias (a parameter of its own, as in the original) resized
        too."""
        embeddings = super().resize_token_embeddings(*args, **kwargs)
        self.lm_head.resize_bias(embeddings.num_embeddings)
        return embeddings

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> MaskedLMOutput:
        outputs = self.rnafm(
            input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            inputs_embeds=inputs_embeds,
            **kwargs,
        )
        logits = self.lm_head(outputs.last_hidden_state)
        loss = None
        if labels is not None:
            # transformers' masked-LM loss: with Trainer's `num_items_in_batch` it stays exact under gradient
            # accumulation.
            loss = self.loss_function(logits, labels, vocab_size=self.config.vocab_size, **kwargs)
        return MaskedLMOutput(
            loss=loss, logits=logits, hidden_states=outputs.hidden_states, attentions=outputs.attentions
        )


@dataclass
class RnaFmContactPredictionOutput(ModelOutput):
    """
    Output of [`RnaFmForContactPrediction`].

    Args:
        loss: masked binary cross-entropy over the labelled residue pairs (when `labels` are given).
        logits: (batch, L, L) pair logits over residues only (`<cls>`, `<eos>` removed; L = longest sequence);
            `torch.sigmoid(logits)` are the contact probabilities. Entries beyond a sequence's length are
            meaningless.
        hidden_states: as in [`RnaFmModel`], when requested.
        attentions: as in [`RnaFmModel`], when requested.
    """

    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: tuple[torch.Tensor, ...] | None = None


@dataclass
class RnaFmSecondaryStructureOutput(RnaFmContactPredictionOutput):
    """
    Output of [`RnaFmForSecondaryStructure`]: the fields of [`RnaFmContactPredictionOutput`], with `logits` the
    (batch, L, L) symmetric pair logits of the ResNet head over nucleotides; `torch.sigmoid(logits)` are the pairing
    probabilities, which `rnafm_hf.structure.fold_probabilities` turns into a structure.
    """


class RnaFmForContactPrediction(RnaFmPreTrainedModel):
    """
    RNA-FM with the ESM-style contact head: the attention maps of all layers and heads, symmetrised and
    APC-corrected, go through a logistic regression for each residue pair.

    **This head needs fine-tuning.** RNA-FM and mRNA-FM were pretrained with masked-LM only; the regression weights
    in their files (when present at all) never saw a contact, so loading them logs a warning and the probabilities
    mean nothing until you train the head on your pair labels (a few hundred structures usually suffice for a
    logistic regression). Then set `config.contact_head_trained = True` and save. For secondary structure, use the
    published ResNet head instead ([`RnaFmForSecondaryStructure`]).

    `labels` (batch, L, L) with 1 / 0 for paired / unpaired and -100 for pairs to ignore give a binary
    cross-entropy over the labelled pairs of real residues (padding is ignored automatically; under `Trainer`,
    which counts the labels itself, labels on padding must be -100, as `DataCollatorForPairLabels` makes them).

    Example:

    ```python
    >>> import torch
    >>> from rnafm_hf import RnaFmConfig, RnaFmForContactPrediction, RnaFmTokenizer
    >>> config = RnaFmConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
    ...                      contact_head_trained=True)
    >>> model = RnaFmForContactPrediction(config).eval()
    >>> batch = RnaFmTokenizer()(["GGGAAACCC", "ACGU"], padding=True, return_tensors="pt")
    >>> tuple(model(**batch).logits.shape)
    (2, 9, 9)

    ```
    """

    _keys_to_ignore_on_load_unexpected = [r"lm_head\.", r"ss_head\.", r"classifier\."]

    def __init__(self, config: RnaFmConfig):
        super().__init__(config)
        self.rnafm = RnaFmModel(config)
        self.contact_head = RnaFmContactPredictionHead(config)
        self.post_init()
        if not config.contact_head_trained:
            logger.warning(UNTRAINED_CONTACT_HEAD_WARNING)

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> RnaFmContactPredictionOutput:
        output_attentions = kwargs.pop("output_attentions", None)
        output_attentions = self.config.output_attentions if output_attentions is None else output_attentions
        self._refuse_reentrant_checkpointing()
        self._refuse_packed_input(
            input_ids,
            inputs_embeds,
            attention_mask,
            position_ids,
            kwargs,
            "its pair map comes from each sequence's own attention maps, one (L, L) map per sequence",
        )
        outputs = self.rnafm(
            input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            inputs_embeds=inputs_embeds,
            output_attentions=True,
            **kwargs,
        )
        residue_mask = residue_mask_of(input_ids, attention_mask, outputs.last_hidden_state, self.config)
        logits = self.contact_head(outputs.attentions, residue_mask)
        loss = None
        if labels is not None:
            loss = pair_loss(
                logits, labels.to(logits.device), residue_mask[:, 1:-1], kwargs.get("num_items_in_batch")
            )
        return RnaFmContactPredictionOutput(
            loss=loss,
            logits=logits,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions if output_attentions else None,
        )

    def _refuse_reentrant_checkpointing(self) -> None:
        """The attention maps leave each layer through transformers' output recording, outside a reentrant
        checkpoint's graph, so no gradient would reach the encoder: only non-reentrant checkpointing trains it."""
        layer = self.rnafm.encoder.layers[0]
        checkpoint = getattr(layer, "_gradient_checkpointing_func", None)
        options = getattr(
            checkpoint, "keywords", None
        )  # transformers' functools.partial of torch's checkpoint
        reentrant = isinstance(options, dict) and options.get("use_reentrant", True)
        if layer.gradient_checkpointing and self.training and torch.is_grad_enabled() and reentrant:
            raise ValueError(
                "RnaFmForContactPrediction learns from the attention maps, which reentrant gradient checkpointing "
                "leaves without a gradient: enable it with gradient_checkpointing_kwargs={'use_reentrant': False} "
                "(transformers' default), or turn it off."
            )


class RnaFmForSecondaryStructure(RnaFmPreTrainedModel):
    """
    RNA-FM with its published secondary-structure head (RNA-FM-ResNet; the original `PairwiseConcatWithResNet`):
    pair logits over nucleotides, `torch.sigmoid(logits)` being the pairing probabilities. This is the model of a
    converted `RNA-FM-ResNet_*.pth` folder, and what `AutoModelForContactPrediction` builds for it (its config names
    this architecture). Read a structure off the probabilities with `rnafm_hf.structure.fold_probabilities`, or use
    `pipeline("rna-secondary-structure", model=...)`.

    Unlike the original, padding does not leak into the map: each sequence of a (right-)padded batch gets the map
    it gets alone, up to float rounding (the original's batched output varies with the padding near the sequence
    end). `save_pretrained` saves this model's weights only; a converted folder also carries the encoder's MLM head
    and contact regression for the other classes, so keep that folder if you need them.

    `labels` (batch, L, L) with 1 / 0 for paired / unpaired and -100 for pairs to ignore give a binary
    cross-entropy over the labelled pairs of real residues, so the head can be trained with `Trainer` on new
    structures (batches from `DataCollatorForPairLabels`, which pads the labels with -100). The original trained
    it with the encoder frozen (`model.rnafm.requires_grad_(False)`) and one structure per batch; in training
    mode the BatchNorm statistics of a padded batch include the padded pairs.

    Example:

    ```python
    >>> import torch
    >>> from rnafm_hf import RnaFmConfig, RnaFmForSecondaryStructure, RnaFmTokenizer
    >>> config = RnaFmConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
    ...                      ss_head_reduction=8, ss_head_channels=8, ss_head_blocks=3)
    >>> model = RnaFmForSecondaryStructure(config).eval()
    >>> batch = RnaFmTokenizer()(["GGGAAACCC", "ACGU"], padding=True, return_tensors="pt")
    >>> with torch.no_grad():
    ...     logits = model(**batch).logits
    >>> tuple(logits.shape), bool(torch.equal(logits, logits.transpose(1, 2)))
    ((2, 9, 9), True)

    ```
    """

    _keys_to_ignore_on_load_unexpected = [r"lm_head\.", r"contact_head\.", r"classifier\."]

    def __init__(self, config: RnaFmConfig):
        super().__init__(config)
        self.rnafm = RnaFmModel(config)
        self.ss_head = RnaFmSecondaryStructureHead(config)
        self.post_init()

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> RnaFmSecondaryStructureOutput:
        self._refuse_packed_input(
            input_ids,
            inputs_embeds,
            attention_mask,
            position_ids,
            kwargs,
            "it pairs the residues of each sequence, one (L, L) map per sequence",
        )
        outputs = self.rnafm(
            input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            inputs_embeds=inputs_embeds,
            **kwargs,
        )
        hidden = outputs.last_hidden_state
        residue_mask = residue_mask_of(input_ids, attention_mask, hidden, self.config)
        # As the original: `<eos>` and padding rows zeroed, `<cls>` and the last column dropped.
        embeddings = (hidden * residue_mask[..., None].to(hidden.dtype))[:, 1:-1]
        logits = self.ss_head(embeddings, residue_mask[:, 1:-1])
        loss = None
        if labels is not None:
            loss = pair_loss(
                logits, labels.to(logits.device), residue_mask[:, 1:-1], kwargs.get("num_items_in_batch")
            )
        return RnaFmSecondaryStructureOutput(
            loss=loss, logits=logits, hidden_states=outputs.hidden_states, attentions=outputs.attentions
        )


class RnaFmForSequenceClassification(RnaFmPreTrainedModel):
    """
    RNA-FM with a sequence-level head, for classification (one label or several) and regression: RNA type,
    expression, mean ribosome load, ...

    The sequence is summarised by `config.classifier_pooling`: `"mean"` (the default) averages the last-layer
    rows of the nucleotides only, so `<cls>`, `<eos>` and padding never leak in and a sequence gets the same
    vector alone or in a padded batch; `"cls"` takes the `<cls>` row, which RNA-FM's masked-LM pretraining never
    trained, so it needs fine-tuning to mean anything. The pooled vector goes through dropout, a dense layer with
    tanh and a projection to `config.num_labels`.

    The loss follows `config.problem_type`, as in transformers: `"regression"` (mean-squared error; the default
    when `num_labels == 1`), `"single_label_classification"` (cross-entropy; the default for integer labels) or
    `"multi_label_classification"` (binary cross-entropy on float labels of shape (batch, num_labels)).

    Example:

    ```python
    >>> import torch
    >>> from rnafm_hf import RnaFmConfig, RnaFmForSequenceClassification, RnaFmTokenizer
    >>> config = RnaFmConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
    ...                      num_labels=3)
    >>> model = RnaFmForSequenceClassification(config)
    >>> batch = RnaFmTokenizer()(["GGGAAACCC", "ACGU"], padding=True, return_tensors="pt")
    >>> out = model(**batch, labels=torch.tensor([2, 0]))
    >>> tuple(out.logits.shape), model.config.problem_type, bool(out.loss > 0)
    ((2, 3), 'single_label_classification', True)

    ```
    """

    _keys_to_ignore_on_load_unexpected = [r"lm_head\.", r"contact_head\.", r"ss_head\."]

    def __init__(self, config: RnaFmConfig):
        super().__init__(config)
        self.rnafm = RnaFmModel(config)
        self.classifier = RnaFmClassificationHead(config)
        self.post_init()

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> SequenceClassifierOutput:
        self._refuse_packed_input(
            input_ids,
            inputs_embeds,
            attention_mask,
            position_ids,
            kwargs,
            "it pools each sequence into one vector, for one label per sequence",
        )
        outputs = self.rnafm(
            input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            inputs_embeds=inputs_embeds,
            **kwargs,
        )
        hidden = outputs.last_hidden_state
        residue_mask = residue_mask_of(input_ids, attention_mask, hidden, self.config)
        pooled = pool_sequence(hidden, residue_mask, attention_mask, self.config.classifier_pooling)
        logits = self.classifier(pooled)
        loss = None
        if labels is not None:
            labels = sequence_labels(labels.to(logits.device), logits, self.config)
            loss = self.loss_function(labels=labels, pooled_logits=logits, config=self.config, **kwargs)
            count = kwargs.get("num_items_in_batch")
            if count is not None and self.config.problem_type != "single_label_classification":
                # transformers' MSE and BCE are means whatever Trainer counted; make them sums over its count of
                # labels in the whole batch, as the cross-entropy is, so accumulation matches one large batch.
                loss = loss * labels.numel() / torch.as_tensor(count, device=loss.device)
        return SequenceClassifierOutput(
            loss=loss, logits=logits, hidden_states=outputs.hidden_states, attentions=outputs.attentions
        )


class RnaFmForTokenClassification(RnaFmPreTrainedModel):
    """
    RNA-FM with a per-token head (dropout -> linear), for one label per nucleotide (per codon for mRNA-FM):
    binding sites, modifications, ...

    `logits` are (batch, tokens, num_labels) like the input, so row `i + 1` belongs to nucleotide `i` (row 0 is
    `<cls>`). `labels` (batch, tokens) are aligned the same way, as transformers' token-classification recipe
    makes them; the loss is the cross-entropy over nucleotides only: `<cls>`, `<eos>` and padding are ignored
    whatever their label, and so is any position labelled -100. Under `Trainer`, which scales the loss by its own
    count of labels, labels on those tokens are an error instead: label them -100, as below. Packed
    (padding-free) batches from `DataCollatorWithFlattening` work as padded ones do (see [`RnaFmModel`]). The
    tokenizer's `word_ids()` maps tokens to nucleotides (None on the special tokens):

    ```python
    >>> import torch
    >>> from rnafm_hf import RnaFmConfig, RnaFmForTokenClassification, RnaFmTokenizer
    >>> tokenizer = RnaFmTokenizer()
    >>> encoding = tokenizer("GGGAAACCC")
    >>> per_nucleotide = [1, 1, 1, 0, 0, 0, 1, 1, 1]  # e.g. paired or not
    >>> labels = [-100 if i is None else per_nucleotide[i] for i in encoding.word_ids()]
    >>> labels
    [-100, 1, 1, 1, 0, 0, 0, 1, 1, 1, -100]
    >>> config = RnaFmConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
    ...                      num_labels=2)
    >>> out = RnaFmForTokenClassification(config)(**encoding.convert_to_tensors("pt", prepend_batch_axis=True),
    ...                                           labels=torch.tensor([labels]))
    >>> tuple(out.logits.shape)
    (1, 11, 2)

    ```
    """

    _keys_to_ignore_on_load_unexpected = [r"lm_head\.", r"contact_head\.", r"ss_head\."]

    def __init__(self, config: RnaFmConfig):
        super().__init__(config)
        self.rnafm = RnaFmModel(config)
        self.dropout = nn.Dropout(classifier_dropout_of(config))
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> TokenClassifierOutput:
        outputs = self.rnafm(
            input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            inputs_embeds=inputs_embeds,
            **kwargs,
        )
        hidden = outputs.last_hidden_state
        logits = self.classifier(self.dropout(hidden))
        loss = None
        if labels is not None:
            labels = labels.to(logits.device)
            if labels.shape != logits.shape[:2]:
                raise ValueError(
                    f"Token labels have shape {tuple(labels.shape)} but the input has {tuple(logits.shape[:2])} "
                    "tokens: give one label per token, -100 on <cls>, <eos> and padding (word_ids() maps tokens to "
                    "nucleotides; DataCollatorForTokenClassification pads the labels)."
                )
            bounds = None
            if input_ids is None:  # <cls> and <eos> found by place, so in each packed sequence
                bounds, _, _ = read_packing(
                    input_ids, inputs_embeds, attention_mask, position_ids, kwargs, self.config.pad_token_id
                )
            residue_mask = residue_mask_of(input_ids, attention_mask, hidden, self.config, bounds)
            if kwargs.get("num_items_in_batch") is not None:
                check_no_labels_outside(
                    labels, residue_mask, "token", "word_ids() is None on <cls> and <eos>"
                )
            loss = self.loss_function(logits, labels.masked_fill(~residue_mask, -100), self.config, **kwargs)
        return TokenClassifierOutput(
            loss=loss, logits=logits, hidden_states=outputs.hidden_states, attentions=outputs.attentions
        )


__all__ = [
    "RnaFmContactPredictionOutput",
    "RnaFmForContactPrediction",
    "RnaFmForMaskedLM",
    "RnaFmForSecondaryStructure",
    "RnaFmForSequenceClassification",
    "RnaFmForTokenClassification",
    "RnaFmModel",
    "RnaFmPreTrainedModel",
    "RnaFmSecondaryStructureOutput",
]
