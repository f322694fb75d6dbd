"""Zero-shot scores against a direct computation with fm on the same weights: pseudo-log-likelihoods, masked and
wild-type marginals, PLL differences; bad mutations named by row; the command's TSVs."""

from __future__ import annotations

import argparse

import fm
import pytest
import torch
from original_checkpoints import write_original_checkpoint

import rnafm_hf
from rnafm_hf.cli import main
from rnafm_hf.conversion import convert_checkpoint
from rnafm_hf.scoring import Scorer, parse_mutation, score_mutations, score_sequences, write_mutation_scores

SEQUENCES = {"hairpin": "GGGUGCGAUCAUACCAGCACUAAUGCCC", "short": "ACGUUGCA"}
MUTATIONS = [("hairpin", "G2A"), ("hairpin", "U4C:A11G"), ("short", "A1U"), ("short", "C2G:G3C")]


@pytest.fixture(scope="module")
def checkpoint_and_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("scoring")
    checkpoint = write_original_checkpoint(folder / "RNA-FM.pth", token_dropout=True)
    convert_checkpoint(checkpoint, folder / "rna-fm", verify=False)
    return checkpoint, folder / "rna-fm"


@pytest.fixture(scope="module")
def original(checkpoint_and_folder):
    torch.serialization.add_safe_globals([argparse.Namespace])
    model, alphabet = fm.pretrained.load_model_and_alphabet_local(str(checkpoint_and_folder[0]), theme="rna")
    model.eval()
    residues = [alphabet.get_idx(letter) for letter in "ACGU"]

    def log_probabilities(sequence: str, masked: list[int]) -> torch.Tensor:
        """fm's log-probabilities over A, C, G, U at every token, with the 1-based `masked` residues masked."""
        _, _, tokens = alphabet.get_batch_converter()([("x", sequence)])
        for position in masked:
            tokens[0, position] = alphabet.mask_idx
        with torch.no_grad():
            logits = model(tokens)["logits"][0]
        return torch.log_softmax(logits[:, residues], dim=-1)

    return log_probabilities


def column(letter: str) -> int:
    return "ACGU".index(letter)


def fm_pll(log_probabilities, sequence: str) -> float:
    return sum(
        float(log_probabilities(sequence, [i])[i, column(letter)]) for i, letter in enumerate(sequence, 1)
    )


def test_pseudo_log_likelihoods_are_fms(checkpoint_and_folder, original):
    scores = score_sequences(SEQUENCES, str(checkpoint_and_folder[1]), batch_tokens=64, progress=False)
    assert [(s.id, s.length) for s in scores] == [("hairpin", 28), ("short", 8)]
    for score in scores:
        expected = fm_pll(original, SEQUENCES[score.id])
        assert score.pll == pytest.approx(expected, abs=1e-4)
        assert score.pll_per_residue == pytest.approx(expected / score.length, abs=1e-5)


# G2C and G2U mask what G2A masks; a repeated row; with 40 tokens a batch the passes of a sequence span batches.
SATURATION = [*MUTATIONS, ("hairpin", "G2C"), ("hairpin", "G2U"), ("short", "A1U")]


@pytest.mark.parametrize("batch_tokens", [4096, 40])
def test_mutation_scores_are_fms(checkpoint_and_folder, original, batch_tokens):
    scores = score_mutations(
        SEQUENCES,
        SATURATION,
        str(checkpoint_and_folder[1]),
        pll_difference=True,
        batch_tokens=batch_tokens,
        progress=False,
    )
    assert [(s.id, s.mutation) for s in scores] == SATURATION
    for score in scores:
        sequence = SEQUENCES[score.id]
        changes = [(part[0], int(part[1:-1]), part[-1]) for part in score.mutation.split(":")]
        masked = original(sequence, [p for _, p, _ in changes])
        unmasked = original(sequence, [])
        expected_masked = sum(float(masked[p, column(m)] - masked[p, column(w)]) for w, p, m in changes)
        expected_wt = sum(float(unmasked[p, column(m)] - unmasked[p, column(w)]) for w, p, m in changes)
        mutant = list(sequence)
        for _, p, m in changes:
            mutant[p - 1] = m
        expected_difference = fm_pll(original, "".join(mutant)) - fm_pll(original, sequence)
        assert score.masked_marginal == pytest.approx(expected_masked, abs=1e-4)
        assert score.wt_marginal == pytest.approx(expected_wt, abs=1e-4)
        assert score.pll_difference == pytest.approx(expected_difference, abs=1e-4)


@pytest.mark.parametrize(
    ("mutation", "message"),
    [
        ("C1G", "mutation row 1 ('short', 'C1G'): C1G says C at 1, but the sequence has A there."),
        ("A9G", "position 9 is outside the sequence (1-8)"),
        ("A1A", "A1A must change A into another of A, C, G, U"),
        ("A1G:A1C", "position 1 is mutated twice"),
        ("1G", "'1G' is not a mutation like A5G"),
    ],
)
def test_bad_mutations_are_named_by_row(checkpoint_and_folder, mutation, message):
    with pytest.raises(ValueError) as raised:
        score_mutations(SEQUENCES, [("short", mutation)], str(checkpoint_and_folder[1]), progress=False)
    assert message in str(raised.value)


def test_unreadable_residues_are_listed(checkpoint_and_folder):
    with pytest.raises(ValueError, match=r"record 1 \('n'\): not a nucleotide of A, C, G and U: 'N' at 3"):
        score_sequences({"n": "ACNU"}, str(checkpoint_and_folder[1]), progress=False)


def test_score_command_writes_its_tables(checkpoint_and_folder, tmp_path, capsys):
    fasta = tmp_path / "in.fasta"
    fasta.write_text("".join(f">{name}\n{sequence}\n" for name, sequence in SEQUENCES.items()))
    model = str(checkpoint_and_folder[1])
    assert main(["score", str(fasta), "--model", model, "-o", str(tmp_path / "pll.tsv"), "-q"]) == 0
    assert capsys.readouterr().err == ""  # -q: no bar, transformers' own (loading weights) neither
    lines = (tmp_path / "pll.tsv").read_text().splitlines()
    assert lines[0] == "id\tlength\tpll\tpll_per_residue" and lines[2].startswith("short\t8\t-")
    mutations = tmp_path / "mutations.tsv"
    mutations.write_text("id\tmutation\n" + "".join(f"{i}\t{m}\n" for i, m in MUTATIONS))
    command = [
        "score",
        str(fasta),
        "--model",
        model,
        "-o",
        str(tmp_path / "m.tsv"),
        "--mutations",
        str(mutations),
    ]
    assert main([*command, "--pll-difference", "-q"]) == 0
    lines = (tmp_path / "m.tsv").read_text().splitlines()
    assert lines[0] == "id\tmutation\tmasked_marginal\twt_marginal\tpll_difference" and len(lines) == 5
    mutations.write_text("id\tmutation\nshort\tG1A\n")
    assert main(command) == 1
    assert (
        "mutation row 1 ('short', 'G1A'): G1A says G at 1, but the sequence has A there."
        in capsys.readouterr().err
    )


def test_codon_scores_are_fms(tmp_path):
    """mRNA-FM: probabilities over the 64 codons, a nucleotide mutation scored on the codon it touches."""
    checkpoint = write_original_checkpoint(
        tmp_path / "mRNA-FM.pth", theme="rna-3mer", emb_layer_norm_before=False, prefix="encoder_encoder"
    )
    convert_checkpoint(checkpoint, tmp_path / "mrna-fm", verify=False)
    torch.serialization.add_safe_globals([argparse.Namespace])
    model, alphabet = fm.pretrained.load_model_and_alphabet_local(str(checkpoint), theme="rna-3mer")
    model.eval()
    codons = [token for token in alphabet.all_toks if len(token) == 3 and set(token) <= set("ACGU")]
    columns = [alphabet.get_idx(codon) for codon in codons]
    sequence = "AUGGCCAAAUUUCCCUAA"

    def log_probabilities(text: str, masked: list[int]) -> torch.Tensor:
        _, _, tokens = alphabet.get_batch_converter()([("x", text)])
        for position in masked:
            tokens[0, position] = alphabet.mask_idx
        with torch.no_grad():
            return torch.log_softmax(model(tokens)["logits"][0][:, columns], dim=-1)

    def codon_pll(text: str) -> float:
        triplets = [text[i : i + 3] for i in range(0, len(text), 3)]
        return sum(
            float(log_probabilities(text, [n])[n, codons.index(codon)]) for n, codon in enumerate(triplets, 1)
        )

    (score,) = score_sequences({"cds": sequence}, str(tmp_path / "mrna-fm"), progress=False)
    assert score.length == 6 and score.pll == pytest.approx(codon_pll(sequence), abs=1e-4)
    # G4A turns codon 2 (GCC) into ACC.
    (mutation,) = score_mutations(
        {"cds": sequence}, [("cds", "G4A")], str(tmp_path / "mrna-fm"), pll_difference=True, progress=False
    )
    expected_difference = codon_pll("AUGACCAAAUUUCCCUAA") - codon_pll(sequence)
    assert mutation.pll_difference == pytest.approx(expected_difference, abs=1e-4)
    masked, unmasked = log_probabilities(sequence, [2]), log_probabilities(sequence, [])
    expected = float(masked[2, codons.index("ACC")] - masked[2, codons.index("GCC")])
    assert mutation.masked_marginal == pytest.approx(expected, abs=1e-4)
    expected_wt = float(unmasked[2, codons.index("ACC")] - unmasked[2, codons.index("GCC")])
    assert mutation.wt_marginal == pytest.approx(expected_wt, abs=1e-4)


def test_inputs_follow_the_shared_rules(checkpoint_and_folder):
    """Duplicate ids, empty records and partial codons are listed as embed lists them; lower case and T are read as
    upper case and U, in the sequences and in the mutations alike."""
    folder = str(checkpoint_and_folder[1])
    with pytest.raises(ValueError) as raised:
        score_sequences([("a", "GGGG"), ("a", "AAAA"), ("e", "")], folder, progress=False)
    assert "record 2 ('a'): duplicate id" in str(raised.value) and "record 3 ('e'): empty sequence" in str(
        raised.value
    )
    (lower,) = score_mutations({"a": "acgt"}, [("a", "T4C")], folder, progress=False)
    (upper,) = score_mutations({"a": "ACGU"}, [("a", "U4C")], folder, progress=False)
    assert lower.masked_marginal == pytest.approx(upper.masked_marginal, abs=1e-6)


def test_score_is_the_command_as_a_function(checkpoint_and_folder, tmp_path, capsys):
    """`rnafm_hf.score` takes a mutation TSV or rows, writes the command's table, and refuses a PLL difference
    without mutations (in the command, in its flags)."""
    folder = str(checkpoint_and_folder[1])
    mutations = tmp_path / "mutations.tsv"
    mutations.write_text("id\tmutation\n" + "".join(f"{i}\t{m}\n" for i, m in MUTATIONS))
    from_file = rnafm_hf.score(
        SEQUENCES, folder, mutations=mutations, output=tmp_path / "m.tsv", progress=False
    )
    direct = score_mutations(SEQUENCES, MUTATIONS, folder, progress=False)
    assert [(s.id, s.mutation) for s in from_file] == [(s.id, s.mutation) for s in direct]
    assert [s.masked_marginal for s in from_file] == pytest.approx(
        [s.masked_marginal for s in direct], abs=1e-6
    )
    assert (tmp_path / "m.tsv").read_text().splitlines()[0] == "id\tmutation\tmasked_marginal\twt_marginal"
    plls = rnafm_hf.score(SEQUENCES, folder, progress=False)
    expected = score_sequences(SEQUENCES, folder, progress=False)
    assert [(s.id, s.length) for s in plls] == [(s.id, s.length) for s in expected]
    assert [s.pll for s in plls] == pytest.approx([s.pll for s in expected], abs=1e-6)
    with pytest.raises(ValueError, match=r"pll_difference=True compares mutants .* give mutations too"):
        rnafm_hf.score(SEQUENCES, folder, pll_difference=True, progress=False)
    fasta = tmp_path / "in.fasta"
    fasta.write_text("".join(f">{name}\n{sequence}\n" for name, sequence in SEQUENCES.items()))
    command = ["score", str(fasta), "--model", folder, "-o", str(tmp_path / "p.tsv"), "--pll-difference"]
    assert main(command) == 1
    assert (
        "--pll-difference compares mutants with their wild type: give --mutations too."
        in capsys.readouterr().err
    )


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ("id\tmutation\n", "holds no mutation rows under its header"),
        (
            "id\tmutation\nhairpin\n",
            "line 2: needs an id and a mutation (tab-separated); got 'hairpin' and ''",
        ),
        ("id\tmutation\n\thairpin\n", "line 2: needs an id and a mutation"),
        ("id\tmutation\nhairpin\tG2A\n\nhairpin\t\n", "line 4: needs an id and a mutation"),
        ("id\tmutant\nhairpin\tG2A\n", "needs a header with the columns id and mutation"),
    ],
)
def test_mutation_tables_that_cannot_be_read_are_named(
    checkpoint_and_folder, tmp_path, capsys, table, message
):
    fasta = tmp_path / "in.fasta"
    fasta.write_text("".join(f">{name}\n{sequence}\n" for name, sequence in SEQUENCES.items()))
    (tmp_path / "m.tsv").write_text(table)
    command = ["score", str(fasta), "--model", str(checkpoint_and_folder[1]), "-q", "--mutations"]
    assert main([*command, str(tmp_path / "m.tsv"), "-o", str(tmp_path / "out.tsv")]) == 1
    assert message in capsys.readouterr().err and not (tmp_path / "out.tsv").exists()


def test_the_output_table_is_checked_before_any_compute(tmp_path, capsys):
    fasta = tmp_path / "in.fasta"
    fasta.write_text(">a\nACGU\n")
    for output, message in [
        (tmp_path, "is a folder; name the TSV file to write"),
        (tmp_path / "no" / "x.tsv", f"the folder {tmp_path / 'no'} does not exist"),
        (fasta, "is one of the inputs"),
    ]:
        assert main(["score", str(fasta), "--model", str(tmp_path / "absent-model"), "-o", str(output)]) == 1
        assert message in capsys.readouterr().err
    assert fasta.read_text() == ">a\nACGU\n"


def test_pll_difference_column_is_written_for_no_rows_too(tmp_path):
    path = write_mutation_scores([], tmp_path / "m.tsv", pll_difference=True)
    assert path.read_text() == "id\tmutation\tmasked_marginal\twt_marginal\tpll_difference\n"
    assert (
        parse_mutation_error(None) == "row 1: no mutation given (write it like A5G, several joined by ':')."
    )


def parse_mutation_error(text) -> str:
    with pytest.raises(ValueError) as raised:
        parse_mutation(text, "ACGU", "row 1")
    return str(raised.value)


def test_rows_that_mask_the_same_positions_share_one_pass(checkpoint_and_folder, monkeypatch):
    """Two unmasked wild types and four sets of masked positions: six passes for seven rows."""
    seen = []
    read = Scorer.read

    def counting(self, passes, *args):
        seen.extend(passes)
        return read(self, passes, *args)

    monkeypatch.setattr(Scorer, "read", counting)
    score_mutations(SEQUENCES, SATURATION, str(checkpoint_and_folder[1]), progress=False)
    assert sorted(item.key[0] for item in seen) == ["masked"] * 4 + ["unmasked"] * 2
