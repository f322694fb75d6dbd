"""The saved `tokenizer.json` alone: normalisation in the Rust backend, read by `tokenizers` and a plain
`PreTrainedTokenizerFast` (no rnafm_hf classes), with fm's ids; pairs refused; added tokens kept exact; special
tokens outside the vocabulary refused by name."""

from __future__ import annotations

import warnings

import fm
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tokenizers import AddedToken, Tokenizer
from transformers import PreTrainedTokenizerFast

from rnafm_hf import RnaFmCodonTokenizer, RnaFmTokenizer, UnknownResidueWarning
from rnafm_hf.tokenization_rnafm import CODONS, NUCLEOTIDES, WHITESPACE

ALPHABETS = {
    RnaFmTokenizer: fm.Alphabet.from_architecture("roberta_large", "rna"),
    RnaFmCodonTokenizer: fm.Alphabet.from_architecture("roberta_large", "rna-3mer"),
}
# Mixed case, T for U, whitespace inside: each pair is (raw text, the clean RNA fm reads).
RAW_NUCLEOTIDES = [
    ("acgu", "ACGU"),
    ("acgt", "ACGU"),
    ("AcGt NnRy-\n", "ACGUNNRY-"),
    ("gg tt\r\naa\tcc\x0bkm\x0csw", "GGUUAACCKMSW"),
    ("ttttTTTT", "UUUUUUUU"),
]
RAW_CODONS = [
    ("augGCCuaa", "AUGGCCUAA"),
    ("atg gct\ntaa", "AUGGCUUAA"),
    ("A T G\tcgu\r\nUUU", "AUGCGUUUU"),
]
SPECIALS = "<cls>, <pad>, <eos>, <unk>, <null_1>, <null_2>, <null_3>, <null_4>, <mask>"


def fm_ids(alphabet, sequences: list[str]) -> list[list[int]]:
    _, _, tokens = alphabet.get_batch_converter()([(str(i), s) for i, s in enumerate(sequences)])
    return tokens.tolist()


def saved(tokenizer, folder) -> tuple[Tokenizer, PreTrainedTokenizerFast]:
    """`tokenizer.json` as written by save_pretrained, read without rnafm_hf: by tokenizers and by transformers."""
    tokenizer.save_pretrained(folder)
    path = str(folder / "tokenizer.json")
    return Tokenizer.from_file(path), PreTrainedTokenizerFast(tokenizer_file=path)


@pytest.fixture(scope="module", params=[RnaFmTokenizer, RnaFmCodonTokenizer], ids=["nucleotide", "codon"])
def loaded(request, tmp_path_factory):
    """(our tokenizer, tokenizers.Tokenizer from its file, PreTrainedTokenizerFast from its file, fm's alphabet)."""
    ours = request.param()
    backend, plain = saved(ours, tmp_path_factory.mktemp(request.param.__name__))
    return ours, backend, plain, ALPHABETS[request.param]


@pytest.mark.parametrize("kind", [RnaFmTokenizer, RnaFmCodonTokenizer], ids=["nucleotide", "codon"])
def test_saved_file_alone_normalises_like_us_and_fm(kind, tmp_path):
    pairs = RAW_NUCLEOTIDES if kind is RnaFmTokenizer else RAW_CODONS
    raw, clean = [text for text, _ in pairs], [rna for _, rna in pairs]
    ours = kind()
    backend, plain = saved(ours, tmp_path)
    expected = fm_ids(ALPHABETS[kind], clean)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert ours(raw, padding=True)["input_ids"] == expected
    backend.enable_padding(pad_id=1, pad_token="<pad>")
    assert [encoding.ids for encoding in backend.encode_batch(raw)] == expected
    plain.pad_token = "<pad>"  # a plain PreTrainedTokenizerFast knows no special-token names, only the file
    assert plain(raw, padding=True)["input_ids"] == expected
    assert backend.normalizer.normalize_str(raw[1]) == clean[1]


def test_saved_file_keeps_special_tokens_typed_in_text(loaded):
    ours, backend, plain, _ = loaded
    nucleotides = not isinstance(ours, RnaFmCodonTokenizer)
    text = "ac<mask>gt<pad>n" if nucleotides else "aug<mask>gct <null_1>taa"
    expected = [0, 4, 5, 24, 6, 7, 1, 18, 2] if nucleotides else [0, 13, 72, 16, 68, 66, 2]
    assert ours(text)["input_ids"] == expected
    assert backend.encode(text).ids == expected
    assert plain(text)["input_ids"] == expected


def test_saved_file_settings_switched_off(tmp_path):
    ours = RnaFmTokenizer(do_upper_case=False, replace_t_with_u=True, remove_whitespace=False)
    backend, _ = saved(ours, tmp_path)
    with pytest.warns(UnknownResidueWarning, match=r"'a' at position 1, ' ' at position 3"):
        assert ours("aT G")["input_ids"] == [0, 3, 7, 3, 6, 2]
    assert backend.encode("aT G").ids == [0, 3, 7, 3, 6, 2]


def _perturbed(data, clean: str) -> str:
    """`clean` with letters lower-cased, U written as T and whitespace put in, at random."""
    out = []
    for char in clean:
        out.append(
            data.draw(st.sampled_from(["", *WHITESPACE]), label="whitespace")
            if data.draw(st.booleans())
            else ""
        )
        if char == "U" and data.draw(st.booleans(), label="as T"):
            char = "T"
        out.append(char.lower() if data.draw(st.booleans(), label="lower") else char)
    return "".join(out)


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_random_rna_gives_fm_ids_through_us_and_the_file(loaded, data):
    ours, backend, plain, alphabet = loaded
    if isinstance(ours, RnaFmCodonTokenizer):
        residue = st.lists(st.sampled_from(CODONS), min_size=1, max_size=20).map("".join)
    else:
        residue = st.text(alphabet="".join(NUCLEOTIDES), min_size=1, max_size=60)
    clean = data.draw(st.lists(residue, min_size=1, max_size=4), label="clean")
    expected = fm_ids(alphabet, clean)
    assert ours(clean, padding=True)["input_ids"] == expected
    raw = [_perturbed(data, sequence) for sequence in clean]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert ours(raw, padding=True)["input_ids"] == expected
    assert [backend.encode(text).ids for text in raw] == [[i for i in ids if i != 1] for ids in expected]
    assert plain(raw)["input_ids"] == [[i for i in ids if i != 1] for ids in expected]


@settings(max_examples=60, deadline=None)
@given(text=st.text(alphabet="ACGUTacgutNnRry-xX*ß7 \t\n\r\x0b\x0c\u00a0.", min_size=1, max_size=40))
def test_python_checks_and_backend_agree_on_any_text(loaded, text):
    """Whatever the text, the file gives our ids, and fm's for the text our Python check normalises."""
    ours, backend, _, alphabet = loaded
    if isinstance(ours, RnaFmCodonTokenizer):
        text = text * 3
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnknownResidueWarning)
        ids = ours(text)["input_ids"]
    normalised = "".join(c for c in ours._normalise_letters(text) if c not in WHITESPACE)
    assert backend.normalizer.normalize_str(text) == normalised
    assert backend.encode(text).ids == ids
    if normalised and len(normalised) % 3 == 0 or not isinstance(ours, RnaFmCodonTokenizer):
        assert ids == fm_ids(alphabet, [normalised])[0]


@pytest.mark.parametrize("kind", [RnaFmTokenizer, RnaFmCodonTokenizer])
@pytest.mark.parametrize(
    "call",
    [
        lambda tok: tok([("acgt", "ggcc")]),
        lambda tok: tok([("seq1", "AUGGCC"), ("seq2", "UAA")]),  # fm's (label, sequence) tuples
        lambda tok: tok("AUG", text_pair="GCC"),
        lambda tok: tok(["AUG"], text_pair=["GCC"]),
        lambda tok: tok.encode("AUG", "GCC"),
        lambda tok: tok(text_target="AUG", text_pair_target="GCC"),
        lambda tok: tok([(["AUG"], ["GCC"])], is_split_into_words=True),
    ],
    ids=["tuple", "fm-labels", "text_pair", "batch-text_pair", "encode", "target", "split-words"],
)
def test_pairs_are_refused(kind, call):
    with pytest.raises(ValueError) as error:
        call(kind())
    assert str(error.value) == (
        f"{kind.__name__} encodes one RNA sequence per input: RNA-FM has no sequence-pair format (the original fm "
        "batch converter reads single sequences, and its (label, sequence) tuples are not pairs). Pass a string or "
        "a list of strings, e.g. [sequence for _, sequence in data], and encode two sequences separately."
    )


def test_saved_file_pair_template_is_esm_style_and_normalised(loaded):
    ours, backend, _, _ = loaded
    if isinstance(ours, RnaFmCodonTokenizer):
        assert backend.encode("aug", "tAA").ids == [0, 13, 2, 66, 2]
    else:
        assert backend.encode("acgt", "ggcc").ids == [0, 4, 5, 6, 7, 2, 6, 6, 5, 5, 2]


@pytest.mark.parametrize("kind", [RnaFmTokenizer, RnaFmCodonTokenizer])
def test_added_tokens_keep_their_exact_text(kind, tmp_path):
    tokenizer = kind()
    tokenizer.add_tokens(["<lig>", "Tx"])
    tokenizer.add_tokens([AddedToken("ttt", normalized=True)])
    tokenizer.add_tokens(["<cap>"], special_tokens=True)
    assert all(not token.normalized for token in tokenizer.added_tokens_decoder.values())
    text = "ac gt<lig>Tx<cap>ttt" if kind is RnaFmTokenizer else "aug gct<lig>Tx<cap>tttuaa"
    expected = (
        [0, 4, 5, 6, 7, 25, 26, 28, 27, 2] if kind is RnaFmTokenizer else [0, 13, 16, 73, 74, 76, 75, 66, 2]
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no letters of the added tokens are reported as unknown
        assert tokenizer(text)["input_ids"] == expected
    assert tokenizer.convert_ids_to_tokens(expected[5:9] if kind is RnaFmTokenizer else expected[3:7]) == [
        "<lig>",
        "Tx",
        "<cap>",
        "ttt",
    ]
    backend, plain = saved(tokenizer, tmp_path)
    assert backend.encode(text).ids == expected
    assert plain(text)["input_ids"] == expected
    reloaded = kind.from_pretrained(tmp_path)
    assert reloaded(text)["input_ids"] == expected
    assert reloaded.decode(expected, skip_special_tokens=True) == (
        "ACGU<lig>Txttt" if kind is RnaFmTokenizer else "AUGGCU<lig>TxtttUAA"
    )


def test_added_token_matches_only_its_exact_text():
    tokenizer = RnaFmTokenizer()
    tokenizer.add_tokens(["Tx"])
    with pytest.warns(UnknownResidueWarning, match=r"^Sequence 0: 1 character\(s\).*: 'X' at position 4\."):
        assert tokenizer("Txtx")["input_ids"] == [0, 25, 7, 3, 2]  # Tx, then t read as U and an unknown x


def test_split_special_tokens_reads_them_as_text_and_reports_it():
    tokenizer = RnaFmTokenizer()
    with pytest.warns(UnknownResidueWarning, match=r"'<' at position 2, '>' at position 7\."):
        ids = tokenizer("a<mask>", split_special_tokens=True)["input_ids"]
    assert ids == [0, 4, 3, 11, 4, 12, 10, 3, 2]  # < M A S K > with M, S, K the IUPAC codes


@pytest.mark.parametrize("kind", [RnaFmTokenizer, RnaFmCodonTokenizer])
@pytest.mark.parametrize(
    "name, token",
    [
        ("cls_token", "<s>"),
        ("eos_token", "</s>"),
        ("pad_token", "[PAD]"),
        ("unk_token", "[UNK]"),
        ("mask_token", "?"),
    ],
)
def test_special_tokens_outside_the_vocabulary_are_refused_by_name(kind, name, token):
    with pytest.raises(ValueError) as error:
        kind(**{name: token})
    alphabet = "RNA-FM nucleotide" if kind is RnaFmTokenizer else "codon"
    assert str(error.value) == (
        f"{name}={token!r} is not in the {alphabet} vocabulary. {kind.__name__} keeps the original RNA-FM ids; its "
        f"special tokens are {SPECIALS}. Pick one of these (the defaults are <cls>, <pad>, <eos>, <unk> and <mask>)."
    )
    null = kind.vocabulary.index("<null_1>")  # any token of the vocabulary will do
    assert kind(eos_token="<null_1>")("AUG")["input_ids"][-1] == null
