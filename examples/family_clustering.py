#!/usr/bin/env python
"""
Do RNA-FM embeddings separate RNA families? The RNA-FM tutorial's clustering, as a script.

Embeds the three Rfam families in the shared data (5S rRNA RF00001, tRNA RF00005, bacterial RNase P class A
RF00010; 2124 sequences) with mean pooling, and then:
- prints the silhouette score of the families in embedding space (cosine distance; 1 = tight and apart, 0 = mixed);
- prints the accuracy of a k-nearest-neighbour family classifier (5-fold cross-validation);
- draws the embeddings in 2-D with t-SNE, coloured by family, to a PNG.

    pip install "rnafm-hf[examples]"
    python examples/family_clustering.py --model rna-fm --output family_clustering.png

`--model` is any converted RNA-FM folder (or Hub id). Mind the baseline: the families differ so much in length
and composition that even the README's random stand-in (2 layers) reaches a 5-NN accuracy of 0.999, with a
silhouette of 0.237; the silhouette is where pretrained weights have room to show.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

FAMILIES = {"RF00001": "5S rRNA", "RF00005": "tRNA", "RF00010": "RNase P (bacterial, A)"}
DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
FOLDS = 5


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", required=True, help="converted RNA-FM folder or Hub id")
    parser.add_argument(
        "--data",
        type=Path,
        default=DEFAULT_DATA,
        help="folder with RF00001/5/10.fasta (default: %(default)s)",
    )
    parser.add_argument("--output", type=Path, default=Path("family_clustering.png"), help="PNG to write")
    parser.add_argument(
        "--per-family",
        type=int,
        default=None,
        help="embed a random sample of this many per family (default: all)",
    )
    parser.add_argument("--neighbours", type=int, default=5, help="k of the k-NN classifier (default: 5)")
    parser.add_argument("--batch-tokens", type=int, default=8192, help="tokens per embedding batch")
    parser.add_argument(
        "--device", default=None, help="cpu, cuda, cuda:1, ... (default: a GPU if there is one)"
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.per_family is not None and args.per_family < FOLDS:
        parser.error(f"--per-family must be at least {FOLDS}, for the {FOLDS}-fold k-NN accuracy")
    if args.neighbours < 1:
        parser.error(f"--neighbours must be at least 1, got {args.neighbours}")
    if args.per_family is not None:
        training_fold = (FOLDS - 1) * len(FAMILIES) * args.per_family // FOLDS
        if args.neighbours > training_fold:
            parser.error(f"--neighbours must be at most {training_fold}, the sequences of a training fold")
    return args


def read_families(data: Path, per_family: int | None, seed: int) -> tuple[list[tuple[str, str]], list[str]]:
    """`(key, sequence)` records, keys made unique as `family/id`, and each record's family."""
    paths = [data / f"{family}.fasta" for family in FAMILIES]
    for path in paths:
        if not path.is_file():
            raise SystemExit(f"{path} not found; pass --data with the folder holding the Rfam FASTA files.")
    from rnafm_hf.fasta import read_fasta

    rng = np.random.default_rng(seed)
    records, families = [], []
    for family, path in zip(FAMILIES, paths, strict=True):
        members = read_fasta(path)
        if per_family is not None and per_family < len(members):
            members = [members[i] for i in sorted(rng.choice(len(members), per_family, replace=False))]
        records += [(f"{family}/{name}", sequence) for name, sequence in members]
        families += [family] * len(members)
    return records, families


def separation_scores(
    vectors: np.ndarray, families: list[str], neighbours: int, seed: int
) -> tuple[float, float]:
    """Silhouette score (cosine) and cross-validated k-NN accuracy of the families."""
    from sklearn.metrics import silhouette_score
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.neighbors import KNeighborsClassifier

    silhouette = silhouette_score(vectors, families, metric="cosine")
    folds = StratifiedKFold(n_splits=FOLDS, shuffle=True, random_state=seed)
    knn = KNeighborsClassifier(n_neighbors=neighbours, metric="cosine")
    accuracy = cross_val_score(knn, vectors, families, cv=folds).mean()
    return float(silhouette), float(accuracy)


def draw_tsne(vectors: np.ndarray, families: list[str], output: Path, title: str, seed: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.manifold import TSNE

    perplexity = min(30.0, (len(vectors) - 1) / 3)
    points = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(vectors)
    figure, axes = plt.subplots(figsize=(7, 6))
    for family, name in FAMILIES.items():
        chosen = np.array(families) == family
        axes.scatter(*points[chosen].T, s=6, alpha=0.7, label=f"{name} ({family}, {chosen.sum()})")
    axes.set(title=title, xlabel="t-SNE 1", ylabel="t-SNE 2")
    axes.legend(markerscale=3)
    figure.tight_layout()
    output.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(output, dpi=150)
    plt.close(figure)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    records, families = read_families(args.data, args.per_family, args.seed)
    import rnafm_hf

    embedded = dict(
        rnafm_hf.embed(
            records, model=args.model, pooling="mean", batch_tokens=args.batch_tokens, device=args.device
        )
    )
    vectors = np.stack([embedded[key] for key, _ in records])
    silhouette, accuracy = separation_scores(vectors, families, args.neighbours, args.seed)
    draw_tsne(vectors, families, args.output, f"RNA-FM embeddings ({args.model}), t-SNE", args.seed)
    print(f"sequences: {len(records)} in {len(FAMILIES)} families")
    print(f"silhouette score (cosine, embedding space): {silhouette:.3f}")
    print(f"{args.neighbours}-NN family accuracy ({FOLDS}-fold): {accuracy:.3f}")
    print(f"t-SNE plot: {args.output}")


if __name__ == "__main__":
    main()
