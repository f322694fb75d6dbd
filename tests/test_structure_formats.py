"""Reading structures off probability maps, the structure file formats, and base-pair scores."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rnafm_hf.structure import (
    CANONICAL_PAIRS,
    DEFAULT_THRESHOLD,
    SecondaryStructure,
    base_pair_metrics,
    fold_probabilities,
)

# Yeast tRNA-Phe (PDB 1EHZ), the cloverleaf: acceptor, D, anticodon and T stems.
TRNA_PHE = "GCGGAUUUAGCUCAGUUGGGAGAGCGCCAGACUGAAGAUCUGGAGGUCCUGUGUUCGAUCCACAGAAUUCGCACCA"
TRNA_PHE_DBN = "(((((((..((((........)))).(((((.......))))).....(((((.......))))))))))))...."
# An H-type pseudoknot: the loop of the first hairpin pairs with the sequence after it.
PSEUDOKNOT = "GGGGAAAACGCGAAAACCCCAAAACGCG"
PSEUDOKNOT_DBN = "((((....[[[[....))))....]]]]"


def symmetric(values: np.ndarray) -> np.ndarray:
    upper = np.triu(values, 1)
    return upper + upper.T


def original_rule(
    probabilities, sequence, threshold=DEFAULT_THRESHOLD, allow_noncanonical=True, tie_order=None, raw=False
):
    """The rule of the original prediction script as the reference describes it: the whole map (both triangles)
    thresholded with the diagonal zeroed, candidates by descending probability, |i-j| <= 1 skipped, a pair kept
    when its row is unused and its column is unused, otherwise a multiplet. The script's numpy sort is unstable:
    `tie_order` (a permutation of the candidates, row-major) stands for the order it happens to give equal
    probabilities; `raw` returns the kept (row, column) entries as they are."""
    values = probabilities * (1 - np.eye(len(sequence)))
    candidates = np.argwhere(values > threshold)
    rank = range(len(candidates)) if tie_order is None else tie_order
    order = sorted(rank, key=lambda k: -values[tuple(candidates[k])])
    used_rows, used_columns, kept, multiplets = set(), set(), [], []
    for k in order:
        x, y = (int(v) for v in candidates[k])
        if abs(x - y) <= 1:
            continue
        if not allow_noncanonical and sequence[x] + sequence[y] not in CANONICAL_PAIRS:
            continue
        if x in used_rows or y in used_columns:
            multiplets.append((x, y))
            continue
        kept.append((x, y))
        used_rows.add(x)
        used_columns.add(y)
    if raw:
        return kept
    return {tuple(sorted(p)) for p in kept}, {tuple(sorted(p)) for p in multiplets}


# Reading structures off maps --------------------------------------------------------------------------------


def test_threshold_is_strict_and_the_diagonal_never_pairs():
    p = np.zeros((8, 8))
    p[0, 7] = p[7, 0] = DEFAULT_THRESHOLD  # equal: not above
    p[1, 6] = p[6, 1] = DEFAULT_THRESHOLD + 1e-7
    np.fill_diagonal(p, 1.0)
    folded = fold_probabilities(p, "GGGAAUCC")
    assert folded.structure.pairs == ((1, 6),) and folded.multiplets == []
    assert fold_probabilities(p, "GGGAAUCC", threshold=0.9).structure.pairs == ()


def test_pairs_closing_an_empty_loop_are_skipped_as_the_original_does():
    p = np.zeros((6, 6))
    p[2, 3] = p[3, 2] = 0.99  # |i-j| = 1: skipped
    p[1, 3] = p[3, 1] = 0.9  # one base enclosed: allowed
    folded = fold_probabilities(p, "GGCAUU")
    assert folded.structure.pairs == ((1, 3),) and folded.multiplets == []
    assert fold_probabilities(p, "GGCAUU", min_loop=0).structure.pairs == ((2, 3),)
    assert fold_probabilities(p, "GGCAUU", min_loop=2).structure.pairs == ()


def test_conflicts_keep_the_most_probable_partner_and_report_the_rest():
    p = np.zeros((10, 10))
    for (i, j), value in {(0, 9): 0.95, (0, 8): 0.9, (1, 9): 0.85, (1, 8): 0.8, (2, 7): 0.5}.items():
        p[i, j] = p[j, i] = value
    folded = fold_probabilities(p, "GGGAAAACCC")
    assert folded.structure.pairs == ((0, 9), (1, 8), (2, 7))
    assert folded.multiplets == [(0, 8), (1, 9)]  # most probable first


def test_canonical_only_filter():
    sequence = "GAAAAAAAAC"  # G-C canonical, A-A not
    p = np.zeros((10, 10))
    p[0, 9] = p[9, 0] = 0.6
    p[1, 8] = p[8, 1] = 0.7
    assert fold_probabilities(p, sequence).structure.pairs == ((0, 9), (1, 8))
    assert fold_probabilities(p, sequence, canonical_only=True).structure.pairs == ((0, 9),)
    # T is read as U, lower case as upper case.
    p[1, 8] = p[8, 1] = 0.0
    p[2, 7] = p[7, 2] = 0.7
    assert fold_probabilities(p, "gacAAAAaAc", canonical_only=True).structure.pairs == ((0, 9),)
    assert fold_probabilities(p, "gatAAAAaAc", canonical_only=True).structure.pairs == ((0, 9), (2, 7))


def test_equal_probabilities_are_visited_in_order_of_position():
    p = np.zeros((8, 8))
    p[1, 6] = p[6, 1] = p[1, 7] = p[7, 1] = p[0, 6] = p[6, 0] = 0.8
    folded = fold_probabilities(p, "GGAAAACC")
    assert folded.structure.pairs == ((0, 6), (1, 7)) and folded.multiplets == [(1, 6)]


def test_saturated_ties_give_one_deterministic_valid_structure():
    """float32's sigmoid gives exactly 1.0 above a logit of about 17, so trained heads' maps are full of ties."""
    logits = np.full((7, 7), -30.0, dtype=np.float32)
    for i, j in [(0, 5), (0, 6), (1, 6), (1, 5)]:
        logits[i, j] = logits[j, i] = 20.0 + i + j  # different logits, the same probability
    probabilities = 1 / (1 + np.exp(-logits.astype(np.float32)))
    assert set(probabilities[logits > 0].tolist()) == {1.0}
    folded = fold_probabilities(probabilities, "GGAAACC")
    # By position: (0, 5) first, (0, 6) and (1, 5) meet a paired base, (1, 6) is free.
    assert folded.structure.pairs == ((0, 5), (1, 6)) and folded.multiplets == [(0, 6), (1, 5)]
    assert fold_probabilities(probabilities.T.copy(), "GGAAACC") == folded  # the same from either triangle
    # The original's result depends on the order its unstable sort gives the ties, and it can keep a base twice.
    candidates = len(np.argwhere(probabilities * (1 - np.eye(7)) > DEFAULT_THRESHOLD))
    outcomes = set()
    for tie_order in itertools.islice(itertools.permutations(range(candidates)), 0, None, 97):
        kept = original_rule(probabilities.astype(np.float64), "GGAAACC", tie_order=tie_order, raw=True)
        bases = [base for pair in {tuple(sorted(p)) for p in kept} for base in pair]
        outcomes.add((frozenset(tuple(sorted(p)) for p in kept), len(bases) != len(set(bases))))
    assert len(outcomes) > 1 and any(twice for _, twice in outcomes)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("canonical_only", [False, True])
def test_agrees_with_the_original_rule_on_random_maps(seed, canonical_only):
    rng = np.random.default_rng(seed)
    length = int(rng.integers(20, 90))
    sequence = "".join(rng.choice(list("ACGU"), length))
    p = symmetric(1 / (1 + np.exp(-(3 * rng.standard_normal((length, length)) - 3))))
    folded = fold_probabilities(p.astype(np.float32), sequence, canonical_only=canonical_only)
    pairs, multiplets = original_rule(
        p.astype(np.float32).astype(np.float64), sequence, allow_noncanonical=not canonical_only
    )
    assert set(folded.structure.pairs) == pairs and len(pairs) > 3
    assert set(folded.multiplets) == multiplets


def test_map_and_sequence_must_agree():
    with pytest.raises(ValueError, match=r"seq7: the probability map is \(4, 4\), the sequence has 5 nt"):
        fold_probabilities(np.zeros((4, 4)), "ACGUA", name="seq7")


# Formats ----------------------------------------------------------------------------------------------------


def test_trna_cloverleaf_in_every_format():
    trna = SecondaryStructure.from_dot_bracket(TRNA_PHE, TRNA_PHE_DBN, name="tRNA-Phe")
    assert len(trna.pairs) == 7 + 4 + 5 + 5
    assert all(TRNA_PHE[i] + TRNA_PHE[j] in CANONICAL_PAIRS for i, j in trna.pairs)
    assert (0, 71) in trna.pairs and (48, 64) in trna.pairs  # G1-C72, T stem G49-C65
    assert trna.to_dot_bracket() == TRNA_PHE_DBN
    assert SecondaryStructure.from_ct(trna.to_ct()) == trna
    assert SecondaryStructure.from_bpseq(trna.to_bpseq(), name="tRNA-Phe") == trna


def test_ct_uses_the_original_column_layout():
    text = SecondaryStructure("GGAAACC", [(0, 6), (1, 5)], "hairpin").to_ct()
    lines = text.splitlines()
    assert lines[0] == "7\thairpin"
    assert lines[1] == "1\tG\t0\t2\t7\t1"
    assert lines[4] == "4\tA\t3\t5\t0\t4"
    assert lines[7] == "7\tC\t6\t8\t1\t7"  # the original writes length + 1 as the last base's successor


def test_pseudoknot_levels():
    knot = SecondaryStructure.from_dot_bracket(PSEUDOKNOT, PSEUDOKNOT_DBN)
    assert knot.pairs[:2] == ((0, 19), (1, 18)) and (8, 27) in knot.pairs
    assert knot.to_dot_bracket() == PSEUDOKNOT_DBN
    three = SecondaryStructure("A" * 8, [(0, 3), (1, 5), (2, 7)])
    assert three.to_dot_bracket() == "([{).].}"
    assert SecondaryStructure.from_dot_bracket("A" * 8, "([{).].}") == three
    letters = SecondaryStructure.from_dot_bracket("A" * 10, "(A[{)a]}..")
    assert letters.to_dot_bracket() == "([{<)]}>.."


@pytest.mark.parametrize(
    ("dot_bracket", "message"),
    [
        ("((..).", r"'\(' at position 1 is never closed"),
        ("(...))", r"'\)' at position 6 closes nothing"),
        ("(..?.)", r"unknown symbol '\?' at position 4"),
        ("(...)", "5 characters, the sequence 6"),
    ],
)
def test_bad_dot_brackets_name_the_position(dot_bracket, message):
    with pytest.raises(ValueError, match=message):
        SecondaryStructure.from_dot_bracket("GGAACC", dot_bracket)


def test_invalid_pairs_are_refused():
    with pytest.raises(ValueError, match=r"base 7 is paired twice \(with 3 and 4\)"):
        SecondaryStructure("GGGAAACCC", [(0, 8), (2, 6), (6, 3)])
    with pytest.raises(ValueError, match=r"\(0, 11\) is not a pair of two bases of the 9-nt sequence"):
        SecondaryStructure("GGGAAACCC", [(0, 11)])
    with pytest.raises(ValueError, match=r"\(0, -1\) is not a pair"):
        SecondaryStructure("GGGAAACCC", [(0, -1)])
    with pytest.raises(ValueError, match="base 2 names 2 as its partner"):
        SecondaryStructure.from_bpseq("1 G 0\n2 A 2\n3 C 0\n")
    with pytest.raises(ValueError, match="no base lines"):
        SecondaryStructure.from_bpseq("# empty\n")
    with pytest.raises(ValueError, match="base 1 names 9 as its partner, but base 9 does not name 1"):
        SecondaryStructure.from_bpseq("1 G 9\n" + "".join(f"{n} A 0\n" for n in range(2, 10)))
    ct = SecondaryStructure("GGAAACC", [(0, 6)], "a").to_ct()
    with pytest.raises(ValueError, match="several structures"):
        SecondaryStructure.from_ct(ct + ct)


def test_files_by_suffix(tmp_path):
    trna = SecondaryStructure.from_dot_bracket(TRNA_PHE, TRNA_PHE_DBN, name="tRNA-Phe")
    for suffix in (".ct", ".bpseq", ".dbn"):
        path = trna.write(tmp_path / f"trna{suffix}")
        back = SecondaryStructure.read(path)
        assert back.pairs == trna.pairs and back.sequence == TRNA_PHE
    # RNAfold-style dot-bracket with an energy column
    (tmp_path / "rnafold.db").write_text(f">tRNA\n{TRNA_PHE}\n{TRNA_PHE_DBN} (-21.60)\n")
    assert SecondaryStructure.read(tmp_path / "rnafold.db").pairs == trna.pairs
    with pytest.raises(ValueError, match="Cannot tell the format"):
        trna.write(tmp_path / "trna.txt")


@st.composite
def structures(draw):
    length = draw(st.integers(1, 60))
    free = list(range(length))
    pairs = []
    for _ in range(draw(st.integers(0, length // 2))):
        if len(free) < 2:
            break
        i, j = draw(st.lists(st.sampled_from(free), min_size=2, max_size=2, unique=True))
        free.remove(i)
        free.remove(j)
        pairs.append((i, j))
    sequence = "".join(draw(st.lists(st.sampled_from("ACGU"), min_size=length, max_size=length)))
    return SecondaryStructure(sequence, pairs, "s")


@settings(max_examples=150, deadline=None)
@given(structures())
def test_every_format_reads_back_the_same_pairs(structure):
    assert (
        SecondaryStructure.from_dot_bracket(structure.sequence, structure.to_dot_bracket(), "s") == structure
    )
    assert SecondaryStructure.from_ct(structure.to_ct()) == structure
    assert SecondaryStructure.from_bpseq(structure.to_bpseq(), "s") == structure
    table = structure.pair_table
    assert all(table[table[i]] == i for i in range(len(table)) if table[i] >= 0)


# Scores -----------------------------------------------------------------------------------------------------


def test_base_pair_metrics_by_hand():
    known = SecondaryStructure.from_dot_bracket("GGGGAAAACCCC", "((((....))))")
    predicted = SecondaryStructure.from_dot_bracket("GGGGAAAACCCC", "(((......)))")
    # predicted (0,11) (1,10) (2,9); known (0,11) (1,10) (2,9) (3,8): all three right, one missed
    exact = base_pair_metrics(predicted, known)
    assert (exact.true_positives, exact.false_positives, exact.false_negatives) == (3, 0, 1)
    assert (exact.precision, exact.recall) == (1.0, 0.75)
    assert exact.f1 == pytest.approx(6 / 7)
    negatives = 66 - 4
    assert exact.mcc == pytest.approx(3 * negatives / np.sqrt(3 * 4 * (negatives) * (negatives + 1)))

    # The same helix one base along: no exact hit, but every pair has a neighbour in the other structure.
    shifted = SecondaryStructure("GGGGAAAACCCC", [(1, 11), (2, 10), (3, 9)])
    assert base_pair_metrics(shifted, known).true_positives == 0
    tolerant = base_pair_metrics(shifted, known, allow_shift=True)
    assert (tolerant.precision, tolerant.recall) == (1.0, 1.0)
    empty = base_pair_metrics(SecondaryStructure("GGGGAAAACCCC"), known)
    assert (empty.precision, empty.recall, empty.f1, empty.mcc) == (0.0, 0.0, 0.0, 0.0)
    with pytest.raises(ValueError, match="13 bases, the reference 12"):
        base_pair_metrics(SecondaryStructure("G" * 13), known)
