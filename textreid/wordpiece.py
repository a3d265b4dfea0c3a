"""BERT's WordPiece tokenizer, identical to ``transformers.BertTokenizer`` (the Python one).

Models trained with BERT's text embeddings (IVT's released checkpoints use
``bert-base-uncased``) expect its ids: ``[CLS] + pieces + [SEP]`` padded with ``[PAD]`` (id 0
in BERT's vocabularies). A caption is first cut at the special-token strings the vocabulary
lists (``[CLS]``, ``[SEP]``, ``[PAD]``, ``[UNK]``, ``[MASK]``, written exactly so), then each
other stretch goes through BERT's ``BasicTokenizer``:

1. cleaning: NUL, U+FFFD and control characters (Unicode category ``C*`` except tab,
   newline and carriage return) are dropped; those three and every ``Zs`` space become a space;
2. a space on either side of every CJK ideograph;
3. NFC normalisation, then a split at whitespace;
4. uncased only: lower-case, NFD, and combining marks (``Mn``) dropped (accents stripped);
5. a split around every punctuation character (Unicode ``P*`` and every ASCII character that
   is neither a letter, a digit nor a space).

Each word then becomes WordPiece pieces, greedy longest-match-first: the longest prefix in
the vocabulary, then the longest ``##``-prefixed continuation, and so on; a word with a
remainder no piece matches, or longer than 100 characters, becomes ``[UNK]``.

Nothing is bundled: the vocabulary is the user's ``vocab.txt`` (one token per line, the line
number is the id), e.g. the one of ``bert-base-uncased``.
"""

from __future__ import annotations

import functools
import os
import unicodedata
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import regex
from torch import Tensor

from textreid._checks import check_int
from textreid._io import atomic_write, read_bounded
from textreid._tokenizer_base import BatchTokenizer, check_config, write_all

__all__ = ["WordPieceTokenizer"]

_FN = "WordPieceTokenizer"
_VOCAB = "vocab.txt"
_CONFIG_TYPE = "bert_wordpiece"
_CONFIG_KEYS = ("type", "context_length", "lowercase", "files")
_CLS, _SEP, _PAD, _UNK, _MASK = "[CLS]", "[SEP]", "[PAD]", "[UNK]", "[MASK]"
# BERT's special tokens: those the vocabulary lists are recognised inside captions, and no
# word equal to one of them is lower-cased or split.
_SPECIALS = (_UNK, _SEP, _PAD, _CLS, _MASK)
_REQUIRED = (_CLS, _SEP, _PAD, _UNK)
_CONTINUATION = "##"
# BERT's WordpieceTokenizer.max_input_chars_per_word.
_MAX_WORD_CHARS = 100
# bert-base-uncased's vocab.txt is 232 KiB; multilingual ones stay far below this.
_MAX_FILE_BYTES = 16 << 20
# BERT's CJK Unified Ideographs blocks (not Hangul, Hiragana or Katakana, which use spaces).
_CJK_RANGES = (
    (0x4E00, 0x9FFF),
    (0x3400, 0x4DBF),
    (0x20000, 0x2A6DF),
    (0x2A700, 0x2B73F),
    (0x2B740, 0x2B81F),
    (0x2B820, 0x2CEAF),
    (0xF900, 0xFAFF),
    (0x2F800, 0x2FA1F),
)

_PathLike = str | os.PathLike[str]


def _is_cjk(cp: int) -> bool:
    return any(lo <= cp <= hi for lo, hi in _CJK_RANGES)


def _is_punctuation(char: str) -> bool:
    cp = ord(char)
    # BERT counts every ASCII non-alphanumeric symbol as punctuation ($, ^, `...), which
    # Unicode puts in the symbol classes.
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(char).startswith("P")


def _clean(text: str) -> str:
    """Steps 1 and 2 of the module docstring: drop control characters, normalise spaces,
    space out CJK ideographs."""
    out: list[str] = []
    for char in text:
        cp = ord(char)
        if char in " \t\n\r":
            out.append(" ")
            continue
        category = unicodedata.category(char)
        if cp == 0 or cp == 0xFFFD or category.startswith("C"):
            continue
        if category == "Zs":
            out.append(" ")
        elif _is_cjk(cp):
            out.append(f" {char} ")
        else:
            out.append(char)
    return "".join(out)


def _strip_accents(word: str) -> str:
    return "".join(c for c in unicodedata.normalize("NFD", word) if unicodedata.category(c) != "Mn")


def _split_punctuation(word: str) -> list[str]:
    pieces: list[str] = []
    current: list[str] = []
    for char in word:
        if _is_punctuation(char):
            if current:
                pieces.append("".join(current))
                current = []
            pieces.append(char)
        else:
            current.append(char)
    if current:
        pieces.append("".join(current))
    return pieces


def _basic_words(text: str, lowercase: bool) -> list[str]:
    """BERT's ``BasicTokenizer.tokenize`` of text holding no special-token string."""
    words: list[str] = []
    for word in unicodedata.normalize("NFC", _clean(text)).split():
        # A special token's string left after cleaning (e.g. "[C\x00LS]") is kept whole, as
        # BERT keeps its never_split words; WordPiece then finds it in the vocabulary.
        if word not in _SPECIALS:
            if lowercase:
                word = _strip_accents(word.lower())
            words.extend(_split_punctuation(word))
        else:
            words.append(word)
    # Stripping accents can leave a word empty or with inner spaces (e.g. a lone combining
    # mark, or a mark between spaces after NFD); BERT splits once more at whitespace.
    return " ".join(words).split()


def _read_vocab_txt(data: bytes, source: str) -> list[str]:
    """Parse a ``vocab.txt``: one token per line, its line number (from 0) is its id."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(f"{_FN}: vocabulary {source} is not UTF-8 text ({err})") from None
    # Python's text mode reads \r\n and \r as line ends too, as transformers' reader does.
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    seen: dict[str, int] = {}
    for idx, token in enumerate(lines):
        if not token or token != token.strip():
            raise ValueError(
                f"{_FN}: vocabulary {source} line {idx + 1} holds {token!r}; every line must "
                "be one token without surrounding spaces"
            )
        if token in seen:
            raise ValueError(
                f"{_FN}: vocabulary {source} lists {token!r} on lines {seen[token] + 1} and "
                f"{idx + 1}; the file is corrupt"
            )
        seen[token] = idx
    missing = [t for t in _REQUIRED if t not in seen]
    if missing:
        raise ValueError(
            f"{_FN}: vocabulary {source} has no {', '.join(missing)}; a BERT vocab.txt lists "
            f"{', '.join(_REQUIRED)} (is it a WordPiece vocabulary?)"
        )
    return lines


class WordPieceTokenizer(BatchTokenizer):
    """BERT's WordPiece tokenizer (``bert-base-uncased`` and its kin) from a ``vocab.txt``.

    Calling the tokenizer turns captions into ``LongTensor[B, L]`` rows
    ``[CLS] + pieces + [SEP]`` padded with the ``[PAD]`` id (0 in BERT's vocabularies). The
    ids equal those of ``transformers.BertTokenizer`` (the Python tokenizer; in transformers 5
    ``BertTokenizerLegacy``) built from the same file, for every input string: see the module
    docstring for the steps.

    Args:
        vocab_file: the ``vocab.txt``: one token per line (UTF-8, at most 16 MiB), line ``i``
            (from 0) has id ``i``. It must list ``[CLS]``, ``[SEP]``, ``[PAD]`` and ``[UNK]``;
            ``[MASK]`` is optional.
        context_length: the padded length ``L`` of every row; at least 2. IVT's checkpoints
            have 512 text positions and never truncated a caption.
        lowercase: BERT's ``do_lower_case``: lower-case and strip accents (uncased models,
            default); ``False`` keeps case and accents (cased models).
        cache_size: how many distinct words keep their piece ids in a least-recently-used
            cache (0 disables it).

    Raises:
        FileNotFoundError: ``vocab_file`` does not exist.
        TypeError: an argument has the wrong type.
        ValueError: ``context_length < 2``; a vocabulary that is not a regular file, holds
            more than 16 MiB, is not UTF-8, has an empty, padded or repeated line, or lacks a
            required special token.

    Differences from the reference code:
        - ``[PAD]`` written inside a caption gets the padding id like any padding, so a
          model masking padding by id (IVT's converted retriever) ignores it; transformers
          derives its attention mask from the padded positions instead.
        - ``truncate=False`` raises ``ValueError`` instead of returning a longer row.

    Example:
        >>> tok = WordPieceTokenizer("bert-base-uncased/vocab.txt", context_length=64)
        >>> ids = tok(["A woman in a red coat.", "a man"])  # LongTensor[2, 64]
        >>> tok.decode(ids[0])
        'a woman in a red coat.'
    """

    _fn: ClassVar[str] = _FN
    config_type: ClassVar[str] = _CONFIG_TYPE
    """The ``"type"`` of :meth:`to_config`."""
    file_names: ClassVar[tuple[str, ...]] = (_VOCAB,)
    """The files a saved config may list (:meth:`to_config`'s ``files``)."""

    def __init__(
        self,
        vocab_file: _PathLike,
        *,
        context_length: int = 512,
        lowercase: bool = True,
        cache_size: int = 1 << 17,
    ) -> None:
        self.context_length = check_int(context_length, "context_length", _FN, min_value=2)
        self._cache_size = check_int(cache_size, "cache_size", _FN, min_value=0)
        if not isinstance(lowercase, bool):
            raise TypeError(f"{_FN}: lowercase must be a bool, got {type(lowercase).__name__}")
        if not isinstance(vocab_file, (str, os.PathLike)):
            raise TypeError(f"{_FN}: vocab_file must be a path, got {type(vocab_file).__name__}")
        path = Path(vocab_file)
        if not path.exists():
            raise FileNotFoundError(
                f"{_FN}: vocabulary {path} does not exist; pass the vocab.txt of the model's "
                "BERT tokenizer (e.g. bert-base-uncased's)"
            )
        self._decoder = _read_vocab_txt(
            read_bounded(path, max_bytes=_MAX_FILE_BYTES, fn=_FN), str(path)
        )
        self._encoder = {token: idx for idx, token in enumerate(self._decoder)}
        self.lowercase = lowercase
        self._special_ids = {s: self._encoder[s] for s in _SPECIALS if s in self._encoder}
        # One capture group: split() then alternates plain text and special strings.
        self._special_re = regex.compile(
            "(" + "|".join(regex.escape(s) for s in self._special_ids) + ")"
        )
        # WordPiece never tries a piece longer than the longest one the vocabulary has.
        self._max_piece = max(len(t) for t in self._decoder)
        self._init_cache()

    # -- saving and configs ----------------------------------------------------------------

    def vocabulary_files(self) -> dict[str, bytes]:
        """The bytes of the files :meth:`save_vocabulary` writes, by name (``vocab.txt``)."""
        return {_VOCAB: ("\n".join(self._decoder) + "\n").encode("utf-8")}

    def save_vocabulary(self, directory: _PathLike) -> tuple[str]:
        """Write ``vocab.txt`` into ``directory`` atomically (a reader never sees half of it).

        The file reads back with this class or ``transformers.BertTokenizer``.

        Returns:
            The path of ``vocab.txt``, in a 1-tuple (as transformers returns it).
        """
        target = Path(directory) / _VOCAB
        atomic_write(target, functools.partial(write_all, data=self.vocabulary_files()[_VOCAB]))
        return (str(target),)

    def to_config(self) -> dict[str, Any]:
        """The tokenizer settings for a saved model config; ``files`` is ``["vocab.txt"]``,
        which the caller writes next to the config (:meth:`vocabulary_files`)."""
        return {
            "type": _CONFIG_TYPE,
            "context_length": self.context_length,
            "lowercase": self.lowercase,
            "files": [_VOCAB],
        }

    @classmethod
    def from_config(
        cls, config: Mapping[str, Any], folder: _PathLike | None = None
    ) -> WordPieceTokenizer:
        """Rebuild a tokenizer from :meth:`to_config` output and the folder holding
        ``vocab.txt``.

        Raises:
            TypeError: ``config`` is not a mapping.
            ValueError: unknown keys or type, ``files`` other than ``["vocab.txt"]``, or no
                ``folder``.
        """
        fn = f"{_FN}.from_config"
        config = check_config(config, fn, _CONFIG_TYPE, _CONFIG_KEYS)
        files = config.get("files")
        if files != [_VOCAB]:
            raise ValueError(f"{fn}: files must be {[_VOCAB]}, got {files!r}")
        if folder is None:
            raise ValueError(f"{fn}: the config lists tokenizer files {files}; pass their folder")
        return cls(
            Path(folder) / _VOCAB,
            context_length=config.get("context_length", 512),
            lowercase=config.get("lowercase", True),
        )

    # -- properties ------------------------------------------------------------------------

    @property
    def cls_token_id(self) -> int:
        """Id of ``[CLS]``, the first token of every row (101 in ``bert-base-uncased``)."""
        return self._special_ids[_CLS]

    @property
    def sep_token_id(self) -> int:
        """Id of ``[SEP]``, the end of every caption (102 in ``bert-base-uncased``)."""
        return self._special_ids[_SEP]

    @property
    def pad_token_id(self) -> int:
        """Id of ``[PAD]``, the padding (0 in ``bert-base-uncased``)."""
        return self._special_ids[_PAD]

    @property
    def unk_token_id(self) -> int:
        """Id of ``[UNK]``, for words no pieces spell (100 in ``bert-base-uncased``)."""
        return self._special_ids[_UNK]

    @property
    def mask_token_id(self) -> int | None:
        """Id of ``[MASK]``, or ``None`` when the vocabulary has none."""
        return self._special_ids.get(_MASK)

    def __repr__(self) -> str:
        return (
            f"{_FN}(vocab_size={self.vocab_size}, context_length={self.context_length}, "
            f"lowercase={self.lowercase})"
        )

    # -- encoding --------------------------------------------------------------------------

    def _encode_word(self, word: str) -> tuple[int, ...]:
        """Greedy longest-match-first WordPiece ids of one basic word."""
        if len(word) > _MAX_WORD_CHARS:
            return (self._special_ids[_UNK],)
        encoder = self._encoder
        ids: list[int] = []
        start, n = 0, len(word)
        while start < n:
            prefix = _CONTINUATION if start else ""
            end = min(n, start + self._max_piece - len(prefix))
            while end > start:
                idx = encoder.get(prefix + word[start:end])
                if idx is not None:
                    ids.append(idx)
                    break
                end -= 1
            else:
                return (self._special_ids[_UNK],)
            start = end
        return tuple(ids)

    def encode(self, text: str) -> list[int]:
        """Piece ids of one caption, without ``[CLS]``/``[SEP]`` and without padding.

        Raises:
            TypeError: ``text`` is not a str.
        """
        if not isinstance(text, str):
            raise TypeError(f"{_FN}.encode: text must be a str, got {type(text).__name__}")
        ids: list[int] = []
        for i, part in enumerate(self._special_re.split(text)):
            if i % 2:
                ids.append(self._special_ids[part])
                continue
            for word in _basic_words(part, self.lowercase):
                ids.extend(self._word_ids(word))
        return ids

    def _row_ids(self) -> tuple[int, int, int]:
        return self.cls_token_id, self.sep_token_id, self.pad_token_id

    # -- decoding --------------------------------------------------------------------------

    def decode(self, ids: Sequence[int] | Tensor, *, skip_special_tokens: bool = True) -> str:
        """Turn ids back into text: pieces joined by spaces, ``##`` continuations glued on.

        The text is the cleaned caption (lower-cased and without accents when uncased) with
        spaces around punctuation; ``[UNK]`` stands for the words it replaced.

        Args:
            ids: a 1-D integer tensor ``[L]`` or a sequence of ints.
            skip_special_tokens: drop ``[CLS]``, ``[SEP]``, ``[PAD]`` and ``[MASK]`` (not
                ``[UNK]``, which stands for a word).

        Raises:
            TypeError: ``ids`` is not a 1-D integer tensor or a sequence of ints.
            ValueError: an id is outside ``[0, vocab_size)``.
        """
        seq = self._id_list(ids, "ids", f"{_FN}.decode")
        skipped = (
            {i for s, i in self._special_ids.items() if s != _UNK} if skip_special_tokens else set()
        )
        tokens = [self._decoder[idx] for idx in seq if idx not in skipped]
        return " ".join(tokens).replace(" " + _CONTINUATION, "").strip()
