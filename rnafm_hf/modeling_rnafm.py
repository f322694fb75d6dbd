"""PyTorch RNA-FM: the ESM-1b-style RNA language model of Chen et al. (2022), in the transformers idiom.

The computation reproduces the original `fm.BioBertModel` step by step (see `tests/test_parity.py`):
learned positions counted over non-pad tokens, optional embedding LayerNorm, pre-LayerNorm layers with the query
scaled before the dot product and the softmax in float32, a final LayerNorm, and a RoBERTa-style LM head tied to
the token embeddings. Layer parameters keep the original names (`self_attn.q_proj`, `fc1`, ...).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from itertools import pairwise

import torch
from torch import nn
from torch.nn import functional as F
from transformers import PreTrainedModel
from transformers.activations import ACT2FN
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import (
    BaseModelOutput,
    MaskedLMOutput,
    ModelOutput,
    SequenceClassifierOutput,
    TokenClassifierOutput,
)
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.processing_utils import Unpack
from transformers.utils import TransformersKwargs, can_return_tuple, logging

from .configuration_rnafm import RnaFmConfig

logger = logging.get_logger(__name__)
# One of transformers' attention functions (an entry of ALL_ATTENTION_FUNCTIONS, or eager_attention_forward):
# (module, query, key, value, mask, **options) -> (output, weights or None).
AttentionFunction = Callable[..., tuple[torch.Tensor, torch.Tensor | None]]

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
    """Plain attention with the softmax in float32, as the original; `attention_mask` is boolean (True = attend)."""
    scores = torch.matmul(query, key.transpose(2, 3)) * scaling
    if attention_mask is not None:
        scores = scores.masked_fill(~attention_mask, float("-inf"))
    probs = F.softmax(scores, dim=-1, dtype=torch.float32).to(value.dtype)
    output = torch.matmul(F.dropout(probs, p=dropout, training=module.training), value)
    return output.transpose(1, 2).contiguous(), probs


def flattened_bounds(positions: torch.Tensor, first: int) -> list[int] | None:
    """The bounds of the sequences marked by position ids that count each sequence from 0 or from `first`, as
    `DataCollatorWithFlattening` writes them (`position_ids_start`); None for position ids of another form."""
    starts = [0, *((positions[1:] - positions[:-1] != 1).nonzero().view(-1) + 1).tolist()]
    start_values = set(positions[starts].tolist())
    if len(start_values) != 1 or start_values.pop() not in (0, first):
        return None
    return [*starts, len(positions)]


def read_packing(
    input_ids: torch.Tensor | None,
    inputs_embeds: torch.Tensor | None,
    attention_mask: torch.Tensor | None,
    position_ids: torch.Tensor | None,
    kwargs: dict,
    padding_idx: int,
) -> tuple[torch.Tensor | None, str | None, torch.Tensor | None]:
    """
    How a batch is packed: the bounds of its packed sequences (None for a padded batch), the argument that gave
    them, and the position ids left to use.

    transformers' `DataCollatorWithFlattening` marks the sequences of its one-row batches by `cu_seq_lens_q` /
    `cu_seq_lens_k`, by `seq_idx`, or by position ids that restart at each sequence (from 0 by default). RNA-FM
    counts positions itself, as the original (`<cls>` at `padding_idx + 1`), whatever the collator counted from:
    such position ids only mark the sequences, and one sequence alone needs no packing. Other position ids are
    indices into the position table.
    """
    reference = input_ids if input_ids is not None else inputs_embeds[..., 0]
    source = next((name for name in ("cu_seq_lens_q", "cu_seq_lens_k") if kwargs.get(name) is not None), None)
    bounds = None if source is None else kwargs[source]
    seq_idx = kwargs.get("seq_idx")
    if position_ids is None and (bounds is not None or seq_idx is None):
        return bounds, source, None
    # Only one row without padding can hold packed sequences (_check_packing explains the other cases).
    if reference.shape[0] != 1:
        return bounds, source, position_ids
    if attention_mask is not None:
        padded = not bool(attention_mask.all())
    else:
        padded = input_ids is not None and bool(input_ids.eq(padding_idx).any())
    if padded:
        return bounds, source, position_ids
    if bounds is None and seq_idx is not None:
        seq_idx = seq_idx.reshape(-1)
        changes = ((seq_idx[1:] != seq_idx[:-1]).nonzero().view(-1) + 1).tolist()
        if changes:
            source, bounds = "seq_idx", torch.tensor([0, *changes, len(seq_idx)], device=reference.device)
    if position_ids is None or position_ids.numel() != reference.shape[1]:
        return bounds, source, position_ids
    first = padding_idx + 1
    positions = position_ids.reshape(-1)
    marked = flattened_bounds(positions, first)
    if marked is None and bounds is not None:
        raise ValueError(
            f"Packed input ({source}) with position_ids that do not count each sequence from 0 or from {first}: "
            "RNA-FM derives positions itself from the sequence bounds (with DataCollatorWithFlattening, pass "
            "return_position_ids=False)."
        )
    if marked is None:
        if bool((positions[1:] - positions[:-1] != 1).any()):
            raise ValueError(
                "position_ids restart within the row, as for packed sequences, but not as DataCollatorWithFlattening "
                f"counts them: count each sequence 0, 1, 2, ... (or {first}, {first + 1}, ...), or pass "
                "cu_seq_lens_q."
            )
        return None, None, position_ids  # one sequence, positions given as table indices
    if bounds is not None and marked != bounds.tolist():
        raise ValueError(
            f"Packed input ({source}) with position_ids that restart at tokens {marked[:-1]}, not at the sequence "
            f"starts {bounds.tolist()[:-1]}. RNA-FM counts positions itself from the sequence bounds (with "
            "DataCollatorWithFlattening, keep its position ids as they are or pass return_position_ids=False)."
        )
    if bounds is None and len(marked) > 2:
        source, bounds = "position_ids", torch.tensor(marked, device=reference.device)
    return bounds, source, None


def check_position_ids(position_ids: torch.Tensor, attention_mask: torch.Tensor, padding_idx: int) -> None:
    """Position ids given as indices into the position table start, as the original's, at `padding_idx + 1`."""
    first = padding_idx + 1
    real = position_ids.expand_as(attention_mask)[attention_mask.bool()]
    if real.numel() and int(real.min()) < first:
        raise ValueError(
            f"position_ids start at {int(real.min())} on a real token, but RNA-FM counts positions from "
            f"padding_idx + 1 = {first} (the <cls> token), as the original does; the rows below are padding or "
            f"were never trained. Leave position_ids out (RNA-FM derives them) or count from {first}."
        )


class PackedSequences:
    """
    Several sequences laid end to end in one row of a batch of size 1, with no padding: sequence `i` holds tokens
    `cu_seq_lens[i] : cu_seq_lens[i + 1]`, `<cls>` and `<eos>` included. The transformers name for those bounds is
    `cu_seq_lens_q` (as `DataCollatorWithFlattening(return_flash_attn_kwargs=True)` gives them).
    """

    def __init__(self, cu_seq_lens: torch.Tensor, total: int, max_tokens: int):
        bounds = [int(bound) for bound in cu_seq_lens.tolist()]
        if cu_seq_lens.dim() != 1 or len(bounds) < 2 or bounds[0] != 0 or bounds[-1] != total:
            raise ValueError(
                f"cu_seq_lens_q must be a 1-D tensor [0, end of sequence 1, end of sequence 2, ..., {total}] over "
                f"the {total} packed tokens; got {bounds}."
            )
        lengths = [end - start for start, end in pairwise(bounds)]
        if min(lengths) < 1:
            raise ValueError(f"cu_seq_lens_q must increase strictly (no empty sequences); got {bounds}.")
        if max(lengths) > max_tokens:
            longest = lengths.index(max(lengths))
            raise ValueError(
                f"Packed sequence {longest} has {max(lengths)} tokens, but the position table holds at most "
                f"{max_tokens} per sequence."
            )
        self.bounds = bounds
        self.max_length = max(lengths)
        device = cu_seq_lens.device
        self.lengths = torch.tensor(lengths, device=device)
        self.segment_ids = torch.repeat_interleave(torch.arange(len(lengths), device=device), self.lengths)
        starts = torch.tensor(bounds[:-1], device=device)
        # Each token's place within its own sequence.
        self.offsets = torch.arange(total, device=device) - starts[self.segment_ids]

    def __len__(self) -> int:
        return len(self.lengths)


def packed_attention(
    attention_interface: AttentionFunction,
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    packed: PackedSequences,
    dropout: float,
) -> torch.Tensor:
    """Attention within each packed sequence; `query`, `key`, `value` are (1, heads, tokens, head_dim), the output
    (1, tokens, heads, head_dim)."""
    if query.device.type == "cpu":
        # One call per sequence: no padding, no mask, and a call costs little next to a CPU's matrix products.
        parts = [
            attention_interface(
                module,
                query[:, :, start:end],
                key[:, :, start:end],
                value[:, :, start:end],
                None,
                dropout=dropout,
                scaling=1.0,
                is_causal=False,
            )[0]
            for start, end in pairwise(packed.bounds)
        ]
        return torch.cat(parts, dim=1)
    return padded_packed_attention(attention_interface, module, query, key, value, packed, dropout)


def padded_packed_attention(
    attention_interface: AttentionFunction,
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    packed: PackedSequences,
    dropout: float,
) -> torch.Tensor:
    """`packed_attention` as one call over the sequences padded to the longest (keys masked), which an accelerator
    runs faster than one small kernel per sequence; only the attention sees the padding."""
    heads, head_dim = query.shape[1], query.shape[3]
    count, width = len(packed), packed.max_length
    slots = packed.segment_ids * width + packed.offsets

    def padded(x: torch.Tensor) -> torch.Tensor:
        rows = x.new_zeros(count * width, heads, head_dim)
        rows[slots] = x[0].transpose(0, 1)
        return rows.view(count, width, heads, head_dim).transpose(1, 2)

    key_mask = torch.arange(width, device=query.device) < packed.lengths[:, None]
    output, _ = attention_interface(
        module,
        padded(query),
        padded(key),
        padded(value),
        key_mask[:, None, None, :],
        dropout=dropout,
        scaling=1.0,
        is_causal=False,
    )
    return output.reshape(count * width, heads, head_dim)[slots].unsqueeze(0)


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
        if self.token_dropout and input_ids is not None:
            # Applied in eval mode too: the original always rescales by the observed mask ratio.
            is_mask = input_ids == self.mask_token_id
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
    """Multi-head self-attention; eager or SDPA, with the query scaled by head_dim^-0.5 as in the original."""

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
        output_attentions: bool = False,
        packed: PackedSequences | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        batch_size, length, _ = hidden_states.shape
        shape = (batch_size, length, self.num_heads, self.head_dim)
        query = (self.q_proj(hidden_states) * self.scaling).view(shape).transpose(1, 2)
        key = self.k_proj(hidden_states).view(shape).transpose(1, 2)
        value = self.v_proj(hidden_states).view(shape).transpose(1, 2)

        # Attention probabilities exist only in the eager computation, so asking for them selects it.
        attention_interface = (
            eager_attention_forward
            if output_attentions
            else ALL_ATTENTION_FUNCTIONS.get_interface(
                self.config._attn_implementation, eager_attention_forward
            )
        )
        dropout = self.dropout if self.training else 0.0
        if packed is not None:
            output = packed_attention(attention_interface, self, query, key, value, packed, dropout)
            probs = None
        else:
            output, probs = attention_interface(
                self, query, key, value, attention_mask, dropout=dropout, scaling=1.0, is_causal=False
            )
        output = self.out_proj(output.reshape(batch_size, length, -1))
        return output, probs


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
        output_attentions: bool = False,
        packed: PackedSequences | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        attention_output, probs = self.self_attn(
            self.self_attn_layer_norm(hidden_states), attention_mask, output_attentions, packed=packed
        )
        hidden_states = hidden_states + self.dropout(attention_output)
        return hidden_states + self.dropout(self.chunked_feed_forward(hidden_states)), probs

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
        attention_mask: torch.Tensor,
        output_attentions: bool = False,
        output_hidden_states: bool = False,
        packed: PackedSequences | None = None,
    ) -> BaseModelOutput:
        is_token = attention_mask.bool()
        # No mask at all when nothing is padded: the fast SDPA kernels need none, and the original passes None too.
        key_mask = None if packed is not None or is_token.all() else is_token[:, None, None, :]
        all_hidden_states = (hidden_states,) if output_hidden_states else None
        all_attentions = () if output_attentions else None
        for layer in self.layers:
            hidden_states, probs = layer(hidden_states, key_mask, output_attentions, packed=packed)
            if output_hidden_states:
                all_hidden_states += (hidden_states,)
            if output_attentions:
                # As in the original: maps are zero on every row and column of a padding position.
                pair_mask = (is_token[:, None, :, None] & is_token[:, None, None, :]).to(probs.dtype)
                all_attentions += (probs * pair_mask,)
        hidden_states = self.emb_layer_norm_after(hidden_states)
        if output_hidden_states:
            # The original reports the last layer after the final LayerNorm.
            all_hidden_states = all_hidden_states[:-1] + (hidden_states,)
        return BaseModelOutput(
            last_hidden_state=hidden_states, hidden_states=all_hidden_states, attentions=all_attentions
        )


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
        for block in self.blocks:
            x = block(x, pair_mask)
        logits = self.output(masked(x, pair_mask)).squeeze(1)
        return upper_triangle_symmetrized(logits)


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
    _supports_attention_backend = False

    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        if isinstance(module, RnaFmLMHead):
            nn.init.zeros_(module.bias)
        # The original's initialisation of its downstream heads: Kaiming (fan-in) convolutions (the structure head
        # has the only ones) and a near-zero reduction. Set per module: transformers skips modules without
        # parameters of their own when initialising a model of custom code.
        elif isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_in")
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif (
            isinstance(head := getattr(self, "ss_head", None), RnaFmSecondaryStructureHead)
            and module is head.reduction
        ):
            nn.init.normal_(module.weight, std=0.001)
            nn.init.zeros_(module.bias)

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

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> BaseModelOutput:
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("Pass exactly one of input_ids or inputs_embeds.")
        output_attentions = self.config.output_attentions if output_attentions is None else output_attentions
        output_hidden_states = (
            self.config.output_hidden_states if output_hidden_states is None else output_hidden_states
        )

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
        if attention_mask is None:
            attention_mask = (
                input_ids.ne(self.config.pad_token_id)
                if input_ids is not None and packed is None
                else torch.ones(reference.shape, dtype=torch.long, device=reference.device)
            )
        if position_ids is not None and packed is None:
            check_position_ids(position_ids, attention_mask, self.config.pad_token_id)
        embeddings = self.embeddings(input_ids, attention_mask, position_ids, inputs_embeds, packed)
        return self.encoder(embeddings, attention_mask, output_attentions, output_hidden_states, packed)

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

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> MaskedLMOutput:
        outputs = self.rnafm(
            input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            inputs_embeds=inputs_embeds,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            return_dict=True,
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
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> RnaFmContactPredictionOutput:
        output_attentions = self.config.output_attentions if output_attentions is None else output_attentions
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
            output_hidden_states=output_hidden_states,
            return_dict=True,
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
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> RnaFmContactPredictionOutput:
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
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            return_dict=True,
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
        return RnaFmContactPredictionOutput(
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
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
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
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            return_dict=True,
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
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> TokenClassifierOutput:
        outputs = self.rnafm(
            input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            inputs_embeds=inputs_embeds,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            return_dict=True,
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
]
