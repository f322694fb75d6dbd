"""
Pairing maps of RNAs longer than the model reads (1022 nt): the embeddings come from overlapping windows, as
`embed(..., long="window")` stitches them, and the ResNet pair head runs over the (L, L) map in tiles, so that its
(L, L, channels) activations never exist whole.

What is approximated, and what is not:

- Each residue's embedding sees only the window(s) around it (`window_size` tokens, default 1022; positions are
  averaged over the windows that hold them). Pairs farther apart than a window are scored from embeddings that
  never saw each other: the head still scores them, but from two separate contexts, as the model never does
  within 1022 nt. For sequences within the limit nothing changes: the model reads them whole.
- The tiling is exact: each tile is computed with a halo as wide as the head's receptive field (the sum of its
  convolutions' reach: 106 pairs for RNA-FM-ResNet's 32 dilated blocks), so its centre sees what it sees in the
  whole map; tiles differ from a whole-map pass by float rounding only.
"""

from __future__ import annotations

import torch
from torch import nn

from .modeling_rnafm import upper_triangle_symmetrized

DEFAULT_TILE = 512


def receptive_radius(head: nn.Module) -> int:
    """How far, in pairs, a value of the head's output depends on its input: the sum of its convolutions' reach."""
    return sum(
        module.dilation[0] * (module.kernel_size[0] - 1) // 2
        for module in head.modules()
        if isinstance(module, nn.Conv2d)
    )


def tiled_pair_logits(head: nn.Module, embeddings: torch.Tensor, tile: int = DEFAULT_TILE) -> torch.Tensor:
    """
    The head's (L, L) pair logits for one sequence's residue embeddings (L, hidden), computed tile by tile over the
    upper triangle (each tile with its halo), then mirrored as the head mirrors its map. Peak memory grows with
    (tile + 2 * radius)^2, not with L^2 (apart from the (L, L) float map itself).
    """
    if tile < 1:
        raise ValueError(f"tile must be at least 1; got {tile}.")
    if head.training:  # batch norm would use each tile's own statistics, dropout would differ tile by tile
        raise ValueError(
            "The pair head is in training mode, where tiles differ from the whole map: call .eval()."
        )
    reduced = head.reduction(embeddings)
    length, halo = len(reduced), receptive_radius(head)
    logits = reduced.new_zeros(length, length)
    for top in range(0, length, tile):
        bottom = min(top + tile, length)
        for left in range(top, length, tile):
            right = min(left + tile, length)
            row_start, row_end = max(0, top - halo), min(length, bottom + halo)
            column_start, column_end = max(0, left - halo), min(length, right + halo)
            rows, columns = reduced[row_start:row_end], reduced[column_start:column_end]
            pairs = torch.cat(
                [
                    rows[:, None, :].expand(-1, len(columns), -1),
                    columns[None, :, :].expand(len(rows), -1, -1),
                ],
                dim=-1,
            )
            out = head.pair_logits(head.pair_projection(pairs.permute(2, 0, 1)[None]))[0]
            logits[top:bottom, left:right] = out[
                top - row_start : bottom - row_start, left - column_start : right - column_start
            ]
    return upper_triangle_symmetrized(logits)


def long_sequence_logits(
    model: nn.Module,
    tokenizer,
    sequence: str,
    *,
    window_size: int | None = None,
    window_stride: int | None = None,
    tile: int = DEFAULT_TILE,
) -> torch.Tensor:
    """(1, L, L) pair logits of `RnaFmForSecondaryStructure` `model` for a sequence of any length: windowed
    embeddings of its encoder (`embed`'s windows, mean-merged), then the tiled head."""
    from .embedding import embed

    device = next(model.parameters()).device
    ((_, states),) = embed(
        [("sequence", sequence)],
        model.rnafm,
        tokenizer=tokenizer,
        long="window",
        window_size=window_size,
        window_stride=window_stride,
        device=str(device),
        progress=False,
        log=None,
    )
    embeddings = torch.from_numpy(states).to(device=device, dtype=next(model.ss_head.parameters()).dtype)
    with torch.inference_mode():
        return tiled_pair_logits(model.ss_head, embeddings, tile)[None]
