"""Pictures of a predicted structure as PNG files: the pairing-probability heat map and an arc diagram (matplotlib,
the `plot` extra)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .options import PLOT_INSTALL
from .structure import SecondaryStructure


def _figure(width: float, height: float):
    """A matplotlib figure that only saves to files: no pyplot, whose global state is not safe to share between
    the threads of a server."""
    try:
        from matplotlib.figure import Figure
    except ImportError as error:
        raise ImportError(f"Drawing structures needs matplotlib: {PLOT_INSTALL}") from error
    figure = Figure(figsize=(width, height), dpi=120)
    return figure, figure.subplots()


def plot_structure(probabilities: np.ndarray, structure: SecondaryStructure, path: str | Path) -> None:
    """A heat map of the pairing probabilities with the chosen pairs circled, as a PNG."""
    length = len(structure.sequence)
    figure, axes = _figure(6, 5.2)
    image = axes.imshow(probabilities, cmap="Blues", vmin=0.0, vmax=1.0, interpolation="nearest")
    if structure.pairs:
        rows, columns = np.array(structure.pairs).T
        axes.scatter(
            np.concatenate([columns, rows]),
            np.concatenate([rows, columns]),
            s=max(4.0, 1500 / length),
            facecolors="none",
            edgecolors="crimson",
            linewidths=0.8,
            label="predicted pairs",
        )
        axes.legend(loc="upper right", fontsize=7)
    axes.set_title(f"{structure.name} ({length} nt, {len(structure.pairs)} pairs)", fontsize=9)
    axes.set_xlabel("position j")
    axes.set_ylabel("position i")
    figure.colorbar(image, ax=axes, label="pairing probability")
    figure.tight_layout()
    figure.savefig(path, format="png")  # whatever the name ends in (fold writes to a temporary name first)


def plot_arcs(structure: SecondaryStructure, path: str | Path) -> None:
    """
    An arc diagram as a PNG: the bases on a line, 5' to 3', each pair an arc above it (pseudoknotted pairs, which
    cross others, in a second colour), the letters written out for sequences short enough to read.
    """
    figure, axes = _figure(8, 3.2)
    from matplotlib.patches import Arc

    length = len(structure.sequence)
    crossing = {pair for pair, level in structure.pseudoknot_levels().items() if level > 0}
    axes.plot([0, length - 1], [0, 0], color="0.4", linewidth=1.0)
    for i, j in structure.pairs:
        colour = "darkorange" if (i, j) in crossing else "steelblue"
        axes.add_patch(Arc(((i + j) / 2, 0), j - i, j - i, theta1=0, theta2=180, color=colour, linewidth=0.9))
    if length <= 120:
        for position, letter in enumerate(structure.sequence):
            axes.text(position, -0.8, letter, ha="center", va="top", fontsize=5, family="monospace")
    widest = max((j - i for i, j in structure.pairs), default=1)
    axes.set_xlim(-1, length)
    axes.set_ylim(-3, widest / 2 + 1)
    axes.set_aspect("equal")
    axes.set_yticks([])
    for side in ("left", "right", "top"):
        axes.spines[side].set_visible(False)
    axes.set_xlabel("position (0-based)")
    pseudoknots = f", {len(crossing)} in pseudoknots" if crossing else ""
    axes.set_title(f"{structure.name} ({length} nt, {len(structure.pairs)} pairs{pseudoknots})", fontsize=9)
    figure.tight_layout()
    figure.savefig(path)
