"""What CLIP's BPE and BERT's WordPiece tokenizers share: batching captions into padded rows,
id checks for decoding, config checks, and pickling around the per-word cache.

Each tokenizer keeps its own vocabulary files, word rules and special tokens; a row is
always ``[start] + ids + [end]`` padded to ``L``, cut to its first ``L - 1`` ids and the end
token when too long (OpenAI CLIP's and transformers' truncation agree on that).
"""

from __future__ import annotations

import abc
import functools
from collections.abc import Mapping, Sequence
from typing import IO, Any, ClassVar, Literal, overload

import torch
from torch import Tensor

from textreid._checks import check_choice, check_int, check_tensor

__all__ = ["BatchTokenizer", "check_config", "write_all"]


def write_all(f: IO[bytes], data: bytes) -> None:
    """Writer for :func:`textreid._io.atomic_write` of a file's whole ``data``."""
    f.write(data)


def check_config(
    config: object, fn: str, config_type: str, keys: Sequence[str]
) -> Mapping[str, Any]:
    """The checks every ``from_config`` starts with: a mapping, no unknown key, its type.

    Raises:
        TypeError: ``config`` is not a mapping.
        ValueError: a key outside ``keys``, or a ``"type"`` other than ``config_type``.
    """
    if not isinstance(config, Mapping):
        raise TypeError(f"{fn}: config must be a mapping, got {type(config).__name__}")
    unknown = sorted(set(config) - set(keys))
    if unknown:
        raise ValueError(f"{fn}: unknown tokenizer config keys {unknown}")
    check_choice(config.get("type"), "config['type']", fn, (config_type,))
    return config


class BatchTokenizer(abc.ABC):
    """Base of the built-in tokenizers: :meth:`__call__`, :meth:`batch_decode`, the
    vocabulary accessors and pickling, over a subclass's :meth:`encode` and
    :meth:`_encode_word` (cached per word).

    A subclass sets ``_fn`` (its name in error messages), ``context_length``,
    ``_cache_size``, ``_decoder`` (id -> token) and ``_encoder`` (token -> id) before calling
    :meth:`_init_cache`, and gives its row tokens with :meth:`_row_ids`.
    """

    _fn: ClassVar[str]
    context_length: int
    _cache_size: int
    _decoder: list[str]
    _encoder: dict[str, int]

    @abc.abstractmethod
    def encode(self, text: str) -> list[int]:
        """Ids of one caption, without the start and end tokens and without padding."""
        raise NotImplementedError

    @abc.abstractmethod
    def decode(self, ids: Sequence[int] | Tensor, *, skip_special_tokens: bool = True) -> str:
        """One row of ids back into text."""
        raise NotImplementedError

    @abc.abstractmethod
    def _encode_word(self, word: str) -> tuple[int, ...]:
        """Ids of one word; :meth:`_init_cache` wraps it in the word cache."""
        raise NotImplementedError

    @abc.abstractmethod
    def _row_ids(self) -> tuple[int, int, int]:
        """The ids that start, end and pad every row."""
        raise NotImplementedError

    @property
    def vocab_size(self) -> int:
        """Number of token ids (49,408 for CLIP, 30,522 for ``bert-base-uncased``)."""
        return len(self._decoder)

    def get_vocab(self) -> dict[str, int]:
        """A copy of the vocabulary, token -> id."""
        return dict(self._encoder)

    # -- encoding --------------------------------------------------------------------------

    def _init_cache(self) -> None:
        self._word_ids = functools.lru_cache(maxsize=self._cache_size)(self._encode_word)

    @overload
    def __call__(
        self,
        texts: str | Sequence[str],
        *,
        context_length: int | None = ...,
        truncate: bool = ...,
        return_truncated: Literal[False] = ...,
    ) -> Tensor: ...

    @overload
    def __call__(
        self,
        texts: str | Sequence[str],
        *,
        context_length: int | None = ...,
        truncate: bool = ...,
        return_truncated: Literal[True],
    ) -> tuple[Tensor, Tensor]: ...

    def __call__(
        self,
        texts: str | Sequence[str],
        *,
        context_length: int | None = None,
        truncate: bool = True,
        return_truncated: bool = False,
    ) -> Tensor | tuple[Tensor, Tensor]:
        """Tokenise captions into a ``LongTensor[B, L]`` of rows ``[start] + ids + [end]``
        padded with the padding id (CLIP: ``sot``, ``eot``, 0; BERT: ``[CLS]``, ``[SEP]``,
        ``[PAD]``).

        Args:
            texts: one caption or a sequence of ``B`` captions (a single str gives ``B = 1``).
            context_length: ``L``; ``None`` uses the tokenizer's ``context_length``.
            truncate: when a caption needs more than ``L`` tokens, keep its first ``L - 1``
                (the start token included) and end the row with the end token, as OpenAI
                CLIP, open_clip, IRRA and transformers' ``truncation=True`` do. ``False``
                raises instead.
            return_truncated: also return a ``BoolTensor[B]``, True for the captions that
                were cut (``mask.sum()`` counts them).

        Returns:
            ``ids[B, L]`` (int64), or ``(ids, truncated[B])`` with ``return_truncated=True``.

        Raises:
            TypeError: ``texts`` is not a str or a sequence of str.
            ValueError: ``context_length < 2``, or a caption is too long with
                ``truncate=False`` (the message names its index and token count).
        """
        items = self._as_list(texts)
        length = (
            self.context_length
            if context_length is None
            else check_int(context_length, "context_length", self._fn, min_value=2)
        )
        start, end, pad = self._row_ids()
        rows: list[list[int]] = []
        cut: list[bool] = []
        for i, text in enumerate(items):
            ids = [start, *self.encode(text), end]
            too_long = len(ids) > length
            if too_long:
                if not truncate:
                    raise ValueError(
                        f"{self._fn}: caption {i} has {len(ids)} tokens > context_length "
                        f"{length}; shorten it or pass truncate=True"
                    )
                ids = [*ids[: length - 1], end]
            else:
                ids.extend([pad] * (length - len(ids)))
            rows.append(ids)
            cut.append(too_long)
        tokens = torch.tensor(rows, dtype=torch.long).reshape(len(rows), length)
        if return_truncated:
            return tokens, torch.tensor(cut, dtype=torch.bool)
        return tokens

    def _as_list(self, texts: object) -> list[str]:
        if isinstance(texts, str):
            return [texts]
        if not isinstance(texts, Sequence):
            raise TypeError(
                f"{self._fn}: texts must be a str or a sequence of str, got {type(texts).__name__}"
            )
        items = list(texts)
        for i, text in enumerate(items):
            if not isinstance(text, str):
                raise TypeError(f"{self._fn}: texts[{i}] must be a str, got {type(text).__name__}")
        return items

    # -- decoding --------------------------------------------------------------------------

    def batch_decode(
        self, ids: Tensor | Sequence[Sequence[int]], *, skip_special_tokens: bool = True
    ) -> list[str]:
        """:meth:`decode` for each row of ``ids[B, L]``."""
        if isinstance(ids, Tensor):
            check_tensor(
                ids,
                "ids",
                f"{self._fn}.batch_decode",
                ndim=2,
                kind="int",
                dims="(B, L)",
                allow_empty=True,
            )
        return [self.decode(row, skip_special_tokens=skip_special_tokens) for row in ids]

    def _id_list(self, ids: object, name: str, fn: str) -> list[int]:
        """``ids`` (a 1-D integer tensor or a sequence of ints) as a list of vocabulary ids."""
        if isinstance(ids, Tensor):
            check_tensor(ids, name, fn, ndim=1, kind="int", dims="(L,)", allow_empty=True)
            seq: list[int] = ids.tolist()
        elif isinstance(ids, Sequence) and not isinstance(ids, (str, bytes)):
            seq = list(ids)
            for i, idx in enumerate(seq):
                if isinstance(idx, bool) or not isinstance(idx, int):
                    raise TypeError(f"{fn}: {name}[{i}] must be an int, got {type(idx).__name__}")
        else:
            raise TypeError(
                f"{fn}: {name} must be a 1-D integer tensor or a sequence of int, "
                f"got {type(ids).__name__}"
            )
        bad = [idx for idx in seq if not 0 <= idx < len(self._decoder)]
        if bad:
            raise ValueError(
                f"{fn}: {name} holds {bad[0]}, outside the vocabulary [0, {len(self._decoder)})"
            )
        return seq

    # -- pickling (DataLoader workers) -----------------------------------------------------

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        del state["_word_ids"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._init_cache()
