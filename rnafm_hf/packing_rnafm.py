"""Packed (padding-free) batches for RNA-FM: reading how transformers' collators mark the sequences of a one-row
batch, and attention within each packed sequence for every attention backend (one call per sequence on a CPU,
torch's variable-length kernel or one padded call on an accelerator)."""

from collections.abc import Callable
from functools import wraps
from itertools import pairwise

import torch
from torch import nn

# One of transformers' attention functions: (module, query, key, value, mask, **options) -> (output, weights or None).
AttentionFunction = Callable[..., tuple[torch.Tensor, torch.Tensor | None]]


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
        self.max_length = max(lengths)
        self.cu_seq_lens = cu_seq_lens.to(torch.int32)
        device = cu_seq_lens.device
        self.lengths = torch.tensor(lengths, device=device)
        self.segment_ids = torch.repeat_interleave(torch.arange(len(lengths), device=device), self.lengths)
        starts = torch.tensor(bounds[:-1], device=device)
        # Each token's place within its own sequence.
        self.offsets = torch.arange(total, device=device) - starts[self.segment_ids]

    def __len__(self) -> int:
        return len(self.lengths)

    def attention_kwargs(self) -> dict:
        """The arguments by which transformers' attention functions (flash attention's among them) read packing."""
        return {
            "cu_seq_lens_q": self.cu_seq_lens,
            "cu_seq_lens_k": self.cu_seq_lens,
            "max_length_q": self.max_length,
            "max_length_k": self.max_length,
        }


def padded_packed_attention(
    attention_function: AttentionFunction,
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    cu_seq_lens: torch.Tensor,
    max_length: int,
    **kwargs,
) -> torch.Tensor:
    """Attention within each packed sequence as one call over the sequences padded to the longest (keys masked),
    which an accelerator runs faster than one small kernel per sequence; only the attention sees the padding.
    `query`, `key`, `value` are (1, heads, tokens, head_dim), the output (1, tokens, heads, head_dim)."""
    heads, head_dim = query.shape[1], query.shape[3]
    lengths = (cu_seq_lens[1:] - cu_seq_lens[:-1]).long()
    count, width = len(lengths), max_length
    segment_ids = torch.repeat_interleave(torch.arange(count, device=query.device), lengths)
    slots = segment_ids * width + torch.arange(query.shape[2], device=query.device) - cu_seq_lens[segment_ids]

    def padded(x: torch.Tensor) -> torch.Tensor:
        rows = x.new_zeros(count * width, heads, head_dim)
        rows[slots] = x[0].transpose(0, 1)
        return rows.view(count, width, heads, head_dim).transpose(1, 2)

    # Additive, as every backend takes it (flex attention adds a tensor mask to its scores).
    is_key = torch.arange(width, device=query.device) < lengths[:, None]
    key_mask = query.new_zeros(count, 1, width, width).masked_fill(
        ~is_key[:, None, None, :], torch.finfo(query.dtype).min
    )
    output, _ = attention_function(module, padded(query), padded(key), padded(value), key_mask, **kwargs)
    return output.reshape(count * width, heads, head_dim)[slots].unsqueeze(0)


def varlen_packed_attention(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, cu_seq_lens: torch.Tensor, max_length: int
) -> torch.Tensor:
    """Attention within each packed sequence through torch's variable-length kernel (CUDA, half precision): no
    padding at all. Shapes as in `padded_packed_attention`; the query comes scaled already."""
    from torch.nn.attention.varlen import varlen_attn

    tokens = [x[0].transpose(0, 1) for x in (query, key, value)]  # (tokens, heads, head_dim)
    bounds = cu_seq_lens.to(device=query.device, dtype=torch.int32)
    return varlen_attn(*tokens, bounds, bounds, max_length, max_length, scale=1.0).unsqueeze(0)


def has_varlen_kernel() -> bool:
    try:
        from torch.nn.attention.varlen import varlen_attn  # noqa: F401
    except ImportError:
        return False
    return True


def within_packed_sequences(attention_function: AttentionFunction) -> AttentionFunction:
    """
    `attention_function` made to attend within each packed sequence when the batch carries `cu_seq_lens_q`: on a
    CPU one call per sequence (no padding, no mask; a call costs little next to a CPU's matrix products), on an
    accelerator torch's variable-length kernel where it applies (CUDA, half precision, no dropout), else one call
    over the sequences padded to the longest. Flash attention reads packing itself and is not wrapped.
    """

    @wraps(attention_function)
    def attention(module, query, key, value, attention_mask, **kwargs):
        cu_seq_lens = kwargs.pop("cu_seq_lens_q", None)
        max_length = kwargs.pop("max_length_q", None)
        for name in ("cu_seq_lens_k", "max_length_k"):
            kwargs.pop(name, None)
        if cu_seq_lens is None:
            return attention_function(module, query, key, value, attention_mask, **kwargs)
        if query.device.type == "cpu":
            bounds = cu_seq_lens.tolist()
            parts = [
                attention_function(
                    module,
                    query[:, :, start:end],
                    key[:, :, start:end],
                    value[:, :, start:end],
                    None,
                    **kwargs,
                )[0]
                for start, end in pairwise(bounds)
            ]
            return torch.cat(parts, dim=1), None
        if (
            query.device.type == "cuda"
            and query.dtype in (torch.float16, torch.bfloat16)
            and kwargs.get("dropout", 0.0) == 0.0
            and has_varlen_kernel()
        ):
            return varlen_packed_attention(query, key, value, cu_seq_lens, max_length), None
        output = padded_packed_attention(
            attention_function, module, query, key, value, cu_seq_lens, max_length, **kwargs
        )
        return output, None

    return attention
