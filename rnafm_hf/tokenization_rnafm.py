"""Fast tokenizers for RNA-FM (nucleotides) and mRNA-FM (codons), with the original vocabularies and ids.

Everything that decides the ids runs in the Rust `tokenizers` backend, so the saved `tokenizer.json` alone (the
`tokenizers` library, a plain `PreTrainedTokenizerFast`, transformers.js, Text Embeddings Inference) gives the
same ids: the normaliser (whitespace removal, ASCII upper case, T->U), splitting into residues or codons, the
`<cls> ... <eos>` template. Added tokens (`<mask>`, tokens from `add_tokens`) are matched on the exact text, before
the normaliser. Python only checks: it names characters that fall outside the alphabet (they become `<unk>`) with
their position, refuses them with `strict=True`, enforces whole codons and refuses sequence pairs.
"""

from __future__ import annotations

import re
import string
import sys
import warnings
from typing import Any

from tokenizers import AddedToken, Regex, Tokenizer, decoders, normalizers, pre_tokenizers, processors
from tokenizers.models import WordLevel
from transformers import PreTrainedTokenizerFast

SPECIAL_TOKENS_START = ["<cls>", "<pad>", "<eos>", "<unk>"]
NULL_TOKENS = ["<null_1>", "<null_2>", "<null_3>", "<null_4>"]
MASK_TOKEN = "<mask>"
NUCLEOTIDES = ["A", "C", "G", "U", "R", "Y", "K", "M", "S", "W", "B", "D", "H", "V", "N", "-"]
# The order of the original `fm.constants.rnaseq_3mer_toks`: ids 4..67.
CODONS = [
    "GAG", "AAG", "GAA", "CUG", "CAG", "GAU", "AAA", "GUG", "GAC", "AUG", "GCC", "AAC", "GCU", "AAU", "AUC", "UUC",
    "GGA", "AUU", "GGC", "UUU", "CCA", "AGC", "GCA", "UCU", "CUC", "ACC", "CAA", "CCU", "UCC", "ACA", "UUG", "GUU",
    "CUU", "UAC", "ACU", "CCC", "UCA", "GUC", "GGU", "CAC", "AGU", "UAU", "AGA", "CAU", "GGG", "UGG", "UGC", "AGG",
    "UGU", "AUA", "CGC", "UUA", "GCG", "CGG", "CCG", "GUA", "CUA", "ACG", "UCG", "CGA", "CGU", "UGA", "UAA", "UAG",
]  # fmt: skip
NUCLEOTIDE_VOCAB = SPECIAL_TOKENS_START + NUCLEOTIDES + NULL_TOKENS + [MASK_TOKEN]
CODON_VOCAB = SPECIAL_TOKENS_START + CODONS + NULL_TOKENS + [MASK_TOKEN]
# The ASCII whitespace that `remove_whitespace` drops; the same set in Python and in the Rust normaliser (written
# with escapes every regex engine reads: Oniguruma in `tokenizers`, JavaScript in transformers.js).
WHITESPACE = " \t\n\r\x0b\x0c"
WHITESPACE_PATTERN = r"[ \t\n\r\x0B\f]"
MAX_REPORTED = 5


class UnknownResidueWarning(UserWarning):
    """The tokenizer changed or doubts an input: characters encoded as `<unk>`, an empty sequence, or a dropped
    partial codon. Filter it with `warnings.filterwarnings`, or use `strict=True` to make the first two errors."""


class _RnaFmTokenizerBase(PreTrainedTokenizerFast):
    """Shared machinery of the nucleotide and codon tokenizers; see the subclasses."""

    vocabulary: list[str]
    k_mer: int  # residues per token
    alphabet_name: str
    valid_letters: str  # letters that encode to a known token after normalisation
    model_input_names = ["input_ids", "attention_mask"]

    def __init__(
        self,
        do_upper_case: bool = True,
        replace_t_with_u: bool = True,
        remove_whitespace: bool = True,
        strict: bool = False,
        cls_token: str = "<cls>",
        pad_token: str = "<pad>",
        eos_token: str = "<eos>",
        unk_token: str = "<unk>",
        mask_token: str = MASK_TOKEN,
        model_max_length: int = 1024,
        **kwargs: Any,
    ):
        saved_vocab = kwargs.pop("vocab", None)
        if saved_vocab is not None and self._tokens_in_id_order(saved_vocab) != list(self.vocabulary):
            raise ValueError(
                f"{type(self).__name__} has a fixed vocabulary (the original RNA-FM ids); the saved tokenizer "
                "file holds a different one. Load it with the tokenizer class that wrote it."
            )
        for rebuilt in ("merges", "post_processor", "tokenizer_file", "tokenizer_object"):
            kwargs.pop(rebuilt, None)
        self._check_special_tokens(
            cls_token=cls_token,
            pad_token=pad_token,
            eos_token=eos_token,
            unk_token=unk_token,
            mask_token=mask_token,
        )
        self.do_upper_case = do_upper_case
        self.replace_t_with_u = replace_t_with_u
        self.remove_whitespace = remove_whitespace
        self.strict = strict
        self._letters = str.maketrans(self._letter_mapping())
        self._splitters: dict[tuple[int, bool], re.Pattern | None] = {}
        self._tokenizer = self._build_backend(str(cls_token), str(eos_token), str(unk_token))
        self._invalid_char = re.compile(f"[^{re.escape(self._accepted_characters())}]")
        kwargs.setdefault("extra_special_tokens", list(NULL_TOKENS))
        kwargs.setdefault("clean_up_tokenization_spaces", False)
        super().__init__(
            do_upper_case=do_upper_case,
            replace_t_with_u=replace_t_with_u,
            remove_whitespace=remove_whitespace,
            strict=strict,
            cls_token=cls_token,
            pad_token=pad_token,
            eos_token=eos_token,
            unk_token=unk_token,
            mask_token=mask_token,
            model_max_length=model_max_length,
            **kwargs,
        )

    # ---- construction ----------------------------------------------------------------------------------------

    @staticmethod
    def _tokens_in_id_order(vocab: dict[str, int] | list) -> list[str]:
        """A saved vocabulary's tokens by id: a {token: id} mapping (its ids must then be 0, 1, 2, ... to match), or
        (token, score) pairs listed in id order (as transformers' tokenizer extractors give them)."""
        if isinstance(vocab, dict) and sorted(vocab.values()) != list(range(len(vocab))):
            return []
        if isinstance(vocab, dict):
            return [token for index, token in sorted((index, token) for token, index in vocab.items())]
        return [entry[0] if isinstance(entry, (list, tuple)) else entry for entry in vocab]

    @classmethod
    def _vocab_dict(cls) -> dict[str, int]:
        return {token: index for index, token in enumerate(cls.vocabulary)}

    @classmethod
    def _check_special_tokens(cls, **tokens: Any) -> None:
        """Each named special token must be one of the vocabulary's: the ids are fixed, a new one fits no model."""
        vocab = cls._vocab_dict()
        specials = [token for token in cls.vocabulary if token.startswith("<")]
        for name, token in tokens.items():
            if token is None and name in ("pad_token", "mask_token"):
                continue
            if str(token) not in vocab:
                raise ValueError(
                    f"{name}={str(token)!r} is not in the {cls.alphabet_name} vocabulary. {cls.__name__} keeps the "
                    f"original RNA-FM ids; its special tokens are {', '.join(specials)}. Pick one of these (the "
                    "defaults are <cls>, <pad>, <eos>, <unk> and <mask>)."
                )

    def _letter_mapping(self) -> dict[str, str]:
        """Upper case (ASCII letters only, so every character keeps its offset) and T->U, as switched on."""
        mapping = {letter: letter.upper() for letter in string.ascii_lowercase} if self.do_upper_case else {}
        if self.replace_t_with_u:
            mapping["T"] = "U"
            if self.do_upper_case:
                mapping["t"] = "U"
        return mapping

    def _build_backend(self, cls_token: str, eos_token: str, unk_token: str) -> Tokenizer:
        vocab = self._vocab_dict()
        backend = Tokenizer(WordLevel(vocab, unk_token=unk_token))
        steps = []
        if self.remove_whitespace:
            steps.append(normalizers.Replace(Regex(WHITESPACE_PATTERN), ""))
        if self.do_upper_case:  # `tokenizers` has Lowercase but no Uppercase
            steps.extend(normalizers.Replace(letter, letter.upper()) for letter in string.ascii_lowercase)
        if self.replace_t_with_u:
            steps.append(normalizers.Replace("T", "U"))
        if steps:
            backend.normalizer = normalizers.Sequence(steps)
        # Consecutive k-mers from the first residue, as fm's batch converter reads them; a shorter rest is one piece.
        backend.pre_tokenizer = pre_tokenizers.Split(Regex(f"[\\s\\S]{{{self.k_mer}}}"), behavior="isolated")
        # The pair template is ESM's, for runtimes that ask for one; the Python classes refuse pairs.
        backend.post_processor = processors.TemplateProcessing(
            single=f"{cls_token} $A {eos_token}",
            pair=f"{cls_token} $A {eos_token} $B:1 {eos_token}:1",
            special_tokens=[(cls_token, vocab[cls_token]), (eos_token, vocab[eos_token])],
        )
        backend.decoder = decoders.Fuse()
        return backend

    def _accepted_characters(self) -> str:
        """Characters of the normalised text that encode to a known token (everything else becomes `<unk>`)."""
        return self.valid_letters + (WHITESPACE if self.remove_whitespace else "")

    def _add_tokens(self, new_tokens: list[str | AddedToken], special_tokens: bool = False) -> int:
        """Added tokens are matched on the exact text typed, before the residue normaliser (`normalized=False`):
        a normalised `<lig>` or `Tx` would never match once the text is upper-cased and T turned into U."""
        exact = [
            AddedToken(token, special=special_tokens, normalized=False)
            if isinstance(token, str)
            else AddedToken(**{**token.__getstate__(), "normalized": False})
            for token in new_tokens
        ]
        self._splitters.clear()
        return super()._add_tokens(exact, special_tokens=special_tokens)

    # ---- input checks ----------------------------------------------------------------------------------------

    def _added_token_splitter(self, split_special_tokens: bool = False) -> re.Pattern | None:
        """A regex that finds the added tokens as the backend does (leftmost, longest first), or None if none
        apply; special ones are left out when `split_special_tokens` makes the backend read them as text."""
        key = (self._tokenizer.get_vocab_size(with_added_tokens=True), split_special_tokens)
        if key not in self._splitters:
            added = self._tokenizer.get_added_tokens_decoder().values()
            contents = sorted(
                {token.content for token in added if not (split_special_tokens and token.special)},
                key=len,
                reverse=True,
            )
            self._splitters[key] = (
                re.compile("(" + "|".join(map(re.escape, contents)) + ")") if contents else None
            )
        return self._splitters[key]

    def _segments(self, text: str, splitter: re.Pattern | None) -> list[tuple[int, str]]:
        """The stretches of `text` between added tokens, each with its start offset."""
        if splitter is None or splitter.search(text) is None:
            return [(0, text)]
        segments, offset = [], 0
        for i, part in enumerate(splitter.split(text)):
            if i % 2 == 0:  # split() alternates stretch, added token, stretch, ...
                segments.append((offset, part))
            offset += len(part)
        return segments

    def _normalise_letters(self, text: str) -> str:
        """Upper case and T->U outside added tokens, as the backend's normaliser does; every character keeps its
        offset (whitespace stays)."""
        return self._normalise_outside(text, self._added_token_splitter())

    def _normalise_outside(self, text: str, splitter: re.Pattern | None) -> str:
        if not self._letters:
            return text
        if splitter is None or splitter.search(text) is None:
            return text.translate(self._letters)
        return "".join(
            part if i % 2 else part.translate(self._letters) for i, part in enumerate(splitter.split(text))
        )

    def _residue_count(self, segment: str) -> int:
        if self.remove_whitespace:
            return len(segment) - sum(segment.count(c) for c in WHITESPACE)
        return len(segment)

    def _prepare_sequence(self, text: str, index: int, splitter: re.Pattern | None) -> str:
        """Check one input (warn, or raise in strict mode); returns the text for the backend, which normalises it."""
        if not (text.strip(WHITESPACE) if self.remove_whitespace else text):
            message = f"Sequence {index} is empty: it encodes to `<cls><eos>` only."
            if self.strict:
                raise ValueError(f"{message} Remove empty sequences from the input.")
            _warn_from_caller(message)
            return text
        text = self._check_length(text, index, splitter)
        normalised = self._normalise_outside(text, splitter)
        if self._invalid_char.search(normalised) is None:
            return text
        segments = [
            (offset, normalised[offset : offset + len(part)])
            for offset, part in self._segments(text, splitter)
        ]
        problems = [
            (offset + match.start(), match.group())
            for offset, segment in segments
            for match in self._invalid_char.finditer(segment)
        ]
        if problems:
            self._report_unknown(problems, normalised, segments, index)
        return text

    def _check_length(self, text: str, index: int, splitter: re.Pattern | None) -> str:
        return text

    def _describe_unknown(
        self, problems: list[tuple[int, str]], text: str, segments: list[tuple[int, str]]
    ) -> list[str]:
        return [f"{char!r} at position {position + 1}" for position, char in problems]

    def _report_unknown(
        self, problems: list[tuple[int, str]], text: str, segments: list[tuple[int, str]], index: int
    ) -> None:
        described = self._describe_unknown(problems, text, segments)
        listed = ", ".join(described[:MAX_REPORTED]) + (
            f" and {len(described) - MAX_REPORTED} more" if len(described) > MAX_REPORTED else ""
        )
        allowed = f"the {self.alphabet_name} alphabet ({' '.join(self.valid_letters)}"
        allowed += ", T read as U)" if self.replace_t_with_u else ")"
        if self.strict:
            raise ValueError(
                f"Sequence {index}: {listed} not in {allowed}. Remove or replace these characters "
                "(N stands for any nucleotide), or create the tokenizer with strict=False to encode them as <unk>."
            )
        _warn_from_caller(
            f"Sequence {index}: {len(problems)} character(s) not in {allowed} were encoded as <unk>: {listed}. "
            "Pass strict=True to the tokenizer to raise instead."
        )

    def _checked(self, texts: Any, splitter: re.Pattern | None) -> Any:
        if isinstance(texts, str):
            return self._prepare_sequence(texts, 0, splitter)
        if isinstance(texts, (list, tuple)) and all(isinstance(t, str) for t in texts):
            return [self._prepare_sequence(t, i, splitter) for i, t in enumerate(texts)]
        return texts

    def _refuse_pairs(self, text: Any, text_pair: Any, is_split_into_words: bool) -> None:
        """RNA-FM reads one sequence per input: fm has no pair format, so pairs are refused rather than guessed."""
        pairs = text_pair is not None
        if not pairs and isinstance(text, (list, tuple)):
            if is_split_into_words:  # a batch of pre-split pairs: [(words, words), ...]
                pairs = any(
                    isinstance(t, (list, tuple)) and t and isinstance(t[0], (list, tuple)) for t in text
                )
            else:  # a batch of pairs: [(text, text), ...]
                pairs = any(isinstance(t, (list, tuple)) for t in text)
        if pairs:
            raise ValueError(
                f"{type(self).__name__} encodes one RNA sequence per input: RNA-FM has no sequence-pair format (the "
                "original fm batch converter reads single sequences, and its (label, sequence) tuples are not "
                "pairs). Pass a string or a list of strings, e.g. [sequence for _, sequence in data], and encode "
                "two sequences separately."
            )

    def _encode_plus(
        self,
        text,
        text_pair=None,
        *args,
        is_split_into_words: bool = False,
        split_special_tokens: bool | None = None,
        **kwargs,
    ):
        self._refuse_pairs(text, text_pair, is_split_into_words)
        if text is not None and not is_split_into_words:
            split = self.split_special_tokens if split_special_tokens is None else split_special_tokens
            text = self._checked(text, self._added_token_splitter(split))
        return super()._encode_plus(
            text,
            text_pair,
            *args,
            is_split_into_words=is_split_into_words,
            split_special_tokens=split_special_tokens,
            **kwargs,
        )


class RnaFmTokenizer(_RnaFmTokenizerBase):
    """
    Nucleotide tokenizer of RNA-FM: the original 25-token vocabulary and ids, one token per nucleotide between
    `<cls>` and `<eos>`.

    Input is upper-cased (ASCII letters), `T` becomes `U` and whitespace inside a sequence is dropped (each
    switchable); this normalisation is part of the saved `tokenizer.json`, so other runtimes give the same ids.
    IUPAC codes (`R Y K M S W B D H V N`) and the gap `-` keep their own ids; any other character becomes
    `<unk>` with a warning that names it and its (1-based) position, or an error with `strict=True`.
    Special tokens typed in the text, such as `<mask>`, and tokens from `add_tokens` are matched on their exact
    text and stay single tokens. The special tokens must be the vocabulary's own.

    RNA-FM reads one sequence per input (fm has no pair format): sequence pairs, as tuples or `text_pair=`,
    raise a `ValueError`. The saved `tokenizer.json` keeps ESM's pair template, `<cls> A <eos> B <eos>`, for
    runtimes that ask for one.

    Example:

    ```python
    >>> from rnafm_hf import RnaFmTokenizer
    >>> tokenizer = RnaFmTokenizer()
    >>> tokenizer("acgt<mask>u")["input_ids"]
    [0, 4, 5, 6, 7, 24, 7, 2]
    >>> tokenizer.decode([0, 4, 5, 6, 7, 24, 7, 2], skip_special_tokens=True)
    'ACGUU'

    ```
    """

    vocabulary = NUCLEOTIDE_VOCAB
    k_mer = 1
    alphabet_name = "RNA-FM nucleotide"
    valid_letters = "".join(NUCLEOTIDES)


class RnaFmCodonTokenizer(_RnaFmTokenizerBase):
    """
    Codon tokenizer of mRNA-FM: the original 73-token vocabulary and ids, one token per consecutive 3-mer read
    from the first nucleotide, between `<cls>` and `<eos>`.

    Normalisation is that of [`RnaFmTokenizer`]. A sequence whose length is not a multiple of 3 raises a
    `ValueError` giving its length and remainder; with `drop_partial_codon=True` the trailing partial codon is
    dropped with a warning instead. Codons holding anything but A, C, G, U (N, gaps, other letters) become
    `<unk>` and are reported like unknown nucleotides. The backend, and so `tokenizer.json` alone, reads the
    normalised text in consecutive 3-mers (a shorter rest is one `<unk>`), as fm's batch converter does.

    Example:

    ```python
    >>> from rnafm_hf import RnaFmCodonTokenizer
    >>> tokenizer = RnaFmCodonTokenizer()
    >>> tokenizer("AUGGCCUAA")["input_ids"]
    [0, 13, 14, 66, 2]

    ```
    """

    vocabulary = CODON_VOCAB
    k_mer = 3
    alphabet_name = "codon"
    valid_letters = "ACGU"

    def __init__(self, drop_partial_codon: bool = False, **kwargs: Any):
        self.drop_partial_codon = drop_partial_codon
        super().__init__(drop_partial_codon=drop_partial_codon, **kwargs)

    def _check_length(self, text: str, index: int, splitter: re.Pattern | None) -> str:
        segments = self._segments(text, splitter)
        for number, (_, segment) in enumerate(segments):
            length = self._residue_count(segment)
            remainder = length % 3
            if remainder == 0:
                continue
            where = f"Sequence {index}" if len(segments) == 1 else f"Sequence {index} (part {number + 1})"
            if self.drop_partial_codon and number == len(segments) - 1:
                _warn_from_caller(
                    f"{where}: length {length} is not a multiple of 3; dropped the trailing partial codon "
                    f"({remainder} nucleotide(s))."
                )
                return self._drop_trailing_residues(text, remainder)
            remedy = (
                "; only the trailing partial codon can be dropped (drop_partial_codon=True), and this one sits "
                "before a special token"
                if self.drop_partial_codon
                else ", or create the tokenizer with drop_partial_codon=True to drop the trailing partial codon"
            )
            raise ValueError(
                f"{where}: length {length} is not a multiple of 3 (remainder {remainder}); the codon tokenizer "
                f"reads consecutive codons from the first nucleotide. Trim the sequence to whole codons{remedy}."
            )
        return text

    def _drop_trailing_residues(self, text: str, count: int) -> str:
        end = len(text)
        while count:
            end -= 1
            if not (self.remove_whitespace and text[end] in WHITESPACE):
                count -= 1
        return text[:end]

    def _describe_unknown(
        self, problems: list[tuple[int, str]], text: str, segments: list[tuple[int, str]]
    ) -> list[str]:
        """One entry per codon that holds an unknown character: the codon, its number and its span (1-based)."""
        described: dict[tuple[int, int], str] = {}
        for offset, segment in segments:
            positions = [
                offset + i
                for i, char in enumerate(segment)
                if not (self.remove_whitespace and char in WHITESPACE)
            ]
            for position, _ in problems:
                if offset <= position < offset + len(segment):
                    codon = positions.index(position) // 3
                    span = positions[3 * codon : 3 * codon + 3]
                    letters = "".join(text[i] for i in span)
                    described[(offset, codon)] = (
                        f"codon {codon + 1} {letters!r} (positions {span[0] + 1}-{span[-1] + 1})"
                    )
        return list(described.values())


def _warn_from_caller(message: str) -> None:
    """Warn with the user's calling line, not a line inside transformers or this package."""
    frame, level = sys._getframe(1), 2
    while frame is not None and frame.f_globals.get("__name__", "").split(".")[0] in (
        "transformers",
        __package__,
    ):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, UnknownResidueWarning, stacklevel=level)


__all__ = ["RnaFmCodonTokenizer", "RnaFmTokenizer", "UnknownResidueWarning"]
