"""Tokenizers: original ids, normalisation, bad input with exact messages, transformers behaviour."""

from __future__ import annotations

import warnings

import fm
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rnafm_hf import RnaFmCodonTokenizer, RnaFmTokenizer, UnknownResidueWarning
from rnafm_hf.tokenization_rnafm import CODONS, NUCLEOTIDES

NUCLEOTIDE_ALPHABET = fm.Alphabet.from_architecture("roberta_large", "rna")
CODON_ALPHABET = fm.Alphabet.from_architecture("roberta_large", "rna-3mer")


@pytest.fixture(scope="module")
def nucleotide_tokenizer():
    return RnaFmTokenizer()


@pytest.fixture(scope="module")
def codon_tokenizer():
    return RnaFmCodonTokenizer()


def fm_ids(alphabet, sequences):
    _, _, tokens = alphabet.get_batch_converter()([(str(i), s) for i, s in enumerate(sequences)])
    return tokens.tolist()


def test_vocabularies_are_the_original_ones(nucleotide_tokenizer, codon_tokenizer):
    assert nucleotide_tokenizer.get_vocab() == NUCLEOTIDE_ALPHABET.tok_to_idx
    assert codon_tokenizer.get_vocab() == CODON_ALPHABET.tok_to_idx
    assert len(nucleotide_tokenizer) == 25 and len(codon_tokenizer) == 73
    assert (nucleotide_tokenizer.mask_token_id, codon_tokenizer.mask_token_id) == (24, 72)
    for tokenizer in (nucleotide_tokenizer, codon_tokenizer):
        ids = (tokenizer.cls_token_id, tokenizer.pad_token_id, tokenizer.eos_token_id, tokenizer.unk_token_id)
        assert ids == (0, 1, 2, 3)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.text(alphabet="".join(NUCLEOTIDES), min_size=1, max_size=60), min_size=1, max_size=6))
def test_nucleotide_ids_match_fm_batch_converter(nucleotide_tokenizer, sequences):
    ours = nucleotide_tokenizer(sequences, padding=True)["input_ids"]
    assert ours == fm_ids(NUCLEOTIDE_ALPHABET, sequences)


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.lists(st.sampled_from(CODONS), min_size=1, max_size=25).map("".join), min_size=1, max_size=6)
)
def test_codon_ids_match_fm_batch_converter(codon_tokenizer, sequences):
    ours = codon_tokenizer(sequences, padding=True)["input_ids"]
    assert ours == fm_ids(CODON_ALPHABET, sequences)


@settings(max_examples=50, deadline=None)
@given(
    st.lists(st.text(alphabet="ACGUN-", min_size=1, max_size=20).map(lambda s: s * 3), min_size=1, max_size=4)
)
def test_codons_with_n_and_gaps_are_unknown_like_fm(codon_tokenizer, sequences):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnknownResidueWarning)
        ours = codon_tokenizer(sequences, padding=True)["input_ids"]
    assert ours == fm_ids(CODON_ALPHABET, sequences)


def test_normalisation(nucleotide_tokenizer):
    expected = nucleotide_tokenizer("ACGUACGU")["input_ids"]
    for variant in ("acguacgu", "ACGTACGT", "acgtACGU", "ACGU ACGU", "ACGU\nACGU\n", "AC\tGU\r\nACGU"):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert nucleotide_tokenizer(variant)["input_ids"] == expected, variant


def test_normalisation_is_switchable():
    tokenizer = RnaFmTokenizer(do_upper_case=False, replace_t_with_u=False, remove_whitespace=False)
    with pytest.warns(UnknownResidueWarning) as record:
        ids = tokenizer("aT G")["input_ids"]
    assert ids == [0, 3, 3, 3, 6, 2]
    assert str(record[0].message) == (
        "Sequence 0: 3 character(s) not in the RNA-FM nucleotide alphabet (A C G U R Y K M S W B D H V N -) were "
        "encoded as <unk>: 'a' at position 1, 'T' at position 2, ' ' at position 3. Pass strict=True to the "
        "tokenizer to raise instead."
    )


def test_iupac_codes_and_gap_keep_their_ids(nucleotide_tokenizer):
    assert nucleotide_tokenizer("RYKMSWBDHVN-")["input_ids"] == [0, *range(8, 20), 2]


def test_unknown_characters_warn_with_count_and_positions(nucleotide_tokenizer):
    with pytest.warns(UnknownResidueWarning) as record:
        ids = nucleotide_tokenizer(["ACGU", "AC*GXU"])["input_ids"]
    assert ids[1] == [0, 4, 5, 3, 6, 3, 7, 2]
    assert len(record) == 1
    assert str(record[0].message) == (
        "Sequence 1: 2 character(s) not in the RNA-FM nucleotide alphabet (A C G U R Y K M S W B D H V N -, T read "
        "as U) were encoded as <unk>: '*' at position 3, 'X' at position 5. Pass strict=True to the tokenizer to "
        "raise instead."
    )


def test_many_unknown_characters_are_summarised(nucleotide_tokenizer):
    with pytest.warns(UnknownResidueWarning, match=r"8 character\(s\).*'Z' at position 5 and 3 more"):
        nucleotide_tokenizer("ZZZZZZZZ")


def test_strict_raises_naming_character_and_position():
    with pytest.raises(ValueError) as error:
        RnaFmTokenizer(strict=True)(["ACGU", "ACGU", "GG?A"])
    assert str(error.value) == (
        "Sequence 2: '?' at position 3 not in the RNA-FM nucleotide alphabet (A C G U R Y K M S W B D H V N -, T "
        "read as U). Remove or replace these characters (N stands for any nucleotide), or create the tokenizer with "
        "strict=False to encode them as <unk>."
    )


def test_mask_typed_in_text_is_one_token(nucleotide_tokenizer, codon_tokenizer):
    assert nucleotide_tokenizer("acgt<mask>uu")["input_ids"] == [0, 4, 5, 6, 7, 24, 7, 7, 2]
    assert codon_tokenizer("AUG<mask>UAA")["input_ids"] == [0, 13, 72, 66, 2]


def test_empty_sequence_warns_and_strict_raises(nucleotide_tokenizer):
    with pytest.warns(UnknownResidueWarning) as record:
        assert nucleotide_tokenizer(["ACGU", " \n"])["input_ids"][1] == [0, 2]
    assert str(record[0].message) == "Sequence 1 is empty: it encodes to `<cls><eos>` only."
    with pytest.raises(
        ValueError, match=r"^Sequence 0 is empty: it encodes to `<cls><eos>` only\. Remove empty"
    ):
        RnaFmTokenizer(strict=True)("")


def test_padding_masks_and_special_tokens_mask(nucleotide_tokenizer):
    batch = nucleotide_tokenizer(["ACGU", "AC"], padding=True, return_special_tokens_mask=True)
    assert batch["input_ids"] == [[0, 4, 5, 6, 7, 2], [0, 4, 5, 2, 1, 1]]
    assert batch["attention_mask"] == [[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]]
    assert batch["special_tokens_mask"] == [[1, 0, 0, 0, 0, 1], [1, 0, 0, 1, 1, 1]]
    assert "token_type_ids" not in batch


def test_over_length_truncates_to_1024_tokens_or_warns(nucleotide_tokenizer):
    long = "ACGU" * 300  # 1200 nt
    truncated = nucleotide_tokenizer(long, truncation=True)["input_ids"]
    assert len(truncated) == 1024 and truncated[0] == 0 and truncated[-1] == 2
    assert nucleotide_tokenizer.model_max_length == 1024
    full = nucleotide_tokenizer(long)["input_ids"]  # transformers logs its usual over-length warning
    assert len(full) == 1202


def test_decode(nucleotide_tokenizer, codon_tokenizer):
    ids = nucleotide_tokenizer(["ACGUN", "AC"], padding=True)["input_ids"]
    assert nucleotide_tokenizer.batch_decode(ids, skip_special_tokens=True) == ["ACGUN", "AC"]
    assert nucleotide_tokenizer.decode(ids[1]) == "<cls>AC<eos><pad><pad><pad>"
    assert codon_tokenizer.decode(codon_tokenizer("AUGGCCUAA")["input_ids"], skip_special_tokens=True) == (
        "AUGGCCUAA"
    )


def test_codon_remainder_raises_with_length_and_remainder(codon_tokenizer):
    with pytest.raises(ValueError) as error:
        codon_tokenizer(["AUGGCC", "AUGGC"])
    assert str(error.value) == (
        "Sequence 1: length 5 is not a multiple of 3 (remainder 2); the codon tokenizer reads consecutive codons "
        "from the first nucleotide. Trim the sequence to whole codons, or create the tokenizer with "
        "drop_partial_codon=True to drop the trailing partial codon."
    )


def test_a_partial_codon_before_a_special_token_is_not_advised_away():
    from rnafm_hf import RnaFmCodonTokenizer

    with pytest.raises(ValueError, match="only the trailing partial codon can be dropped"):
        RnaFmCodonTokenizer(drop_partial_codon=True)("AU<mask>GGCC")


def test_codon_length_counts_nucleotides_after_normalisation(codon_tokenizer):
    assert codon_tokenizer("aug gcc\nuaa")["input_ids"] == [0, 13, 14, 66, 2]


def test_drop_partial_codon_warns():
    tokenizer = RnaFmCodonTokenizer(drop_partial_codon=True)
    with pytest.warns(UnknownResidueWarning) as record:
        assert tokenizer("AUGGCCU A")["input_ids"] == [0, 13, 14, 2]
    assert str(record[0].message) == (
        "Sequence 0: length 8 is not a multiple of 3; dropped the trailing partial codon (2 nucleotide(s))."
    )


def test_unknown_codons_are_reported(codon_tokenizer):
    with pytest.warns(UnknownResidueWarning) as record:
        assert codon_tokenizer("AUGNNC\nA-G")["input_ids"] == [0, 13, 3, 3, 2]
    assert str(record[0].message) == (
        "Sequence 0: 3 character(s) not in the codon alphabet (A C G U, T read as U) were encoded as <unk>: "
        "codon 2 'NNC' (positions 4-6), codon 3 'A-G' (positions 8-10). Pass strict=True to the tokenizer to raise "
        "instead."
    )
    with pytest.raises(ValueError, match=r"^Sequence 0: codon 1 'ANG' \(positions 1-3\) not in the codon"):
        RnaFmCodonTokenizer(strict=True)("ANGAUG")


def test_warning_points_at_the_callers_line(nucleotide_tokenizer):
    with pytest.warns(UnknownResidueWarning) as record:
        nucleotide_tokenizer("AXA")
    assert record[0].filename == __file__


def test_saved_tokenizer_keeps_its_settings(tmp_path):
    RnaFmCodonTokenizer(drop_partial_codon=True, strict=True).save_pretrained(tmp_path)
    loaded = RnaFmCodonTokenizer.from_pretrained(tmp_path)
    assert (loaded.drop_partial_codon, loaded.strict) == (True, True)
    assert loaded("AUGGCCUAA")["input_ids"] == [0, 13, 14, 66, 2]
