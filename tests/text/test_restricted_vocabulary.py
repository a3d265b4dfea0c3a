"""CLIPTokenizer.restricted_to: the same pieces under fewer ids; any text still encodes."""

from __future__ import annotations

import itertools
import pickle
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from textreid.tokenization import CLIPTokenizer, get_tokenizer

CORPUS = [
    "A young woman in a red coat, black trousers, carrying a white bag.",
    "The man wears a blue striped t-shirt and a pair of khaki shorts.",
    "This thin girl has long blonde hair and is holding a yellow umbrella.",
    "He is wearing glasses, gray sneakers and a green backpack.",
]

_words = st.text(alphabet="abcdefghijklmnopqrstuvwxyz", min_size=1, max_size=12)
_texts = st.lists(_words, min_size=1, max_size=8).map(" ".join)


@pytest.fixture(scope="module")
def full() -> CLIPTokenizer:
    return CLIPTokenizer(mask_token="<|mask|>")


@pytest.fixture(scope="module")
def small(full: CLIPTokenizer) -> CLIPTokenizer:
    return full.restricted_to(CORPUS)


def _pieces(tok: CLIPTokenizer, text: str) -> list[str]:
    names = {i: t for t, i in tok.get_vocab().items()}
    return [names[i] for i in tok.encode(text)]


def _merges(tok: CLIPTokenizer) -> list[tuple[str, str]]:
    lines = tok.vocabulary_files()["merges.txt"].decode().splitlines()[1:]
    return [(a, b) for a, b in (line.split(" ") for line in lines)]


def _applied(word: str, ranks: dict[tuple[str, str], int]) -> set[tuple[str, str]]:
    """The merges BPE applies to one lower-case ASCII word (a slow, independent tracer)."""
    symbols = [*word[:-1], word[-1] + "</w>"]
    used: set[tuple[str, str]] = set()
    while True:
        ranked = [(ranks[p], p) for p in itertools.pairwise(symbols) if p in ranks]
        if not ranked:
            return used
        best = min(ranked)[1]
        used.add(best)
        out: list[str] = []
        i = 0
        while i < len(symbols):
            if tuple(symbols[i : i + 2]) == best:
                out.append(best[0] + best[1])
                i += 2
            else:
                out.append(symbols[i])
                i += 1
        symbols = out


def test_keeps_exactly_the_merges_the_corpus_applies(
    full: CLIPTokenizer, small: CLIPTokenizer
) -> None:
    ranks = {pair: r for r, pair in enumerate(_merges(full))}
    words = {w for text in CORPUS for w in re.findall(r"[a-z]+", text.lower())}
    expected = set().union(*(_applied(w, ranks) for w in words))
    kept = _merges(small)
    assert set(kept) == expected
    assert kept == sorted(kept, key=ranks.__getitem__)  # the original order
    # 256 byte symbols, the same with </w>, the merges, then mask, start and end.
    assert small.vocab_size == 512 + len(kept) + 3
    assert small.eot_token_id == small.vocab_size - 1
    assert small.sot_token_id == small.vocab_size - 2
    assert small.mask_token_id == small.vocab_size - 3


def test_corpus_captions_keep_their_pieces(full: CLIPTokenizer, small: CLIPTokenizer) -> None:
    for text in CORPUS:
        assert _pieces(small, text) == _pieces(full, text)
    ids = small(CORPUS)
    assert int(ids.max()) == small.eot_token_id
    assert small.batch_decode(ids) == full.batch_decode(full(CORPUS))


@settings(max_examples=30, deadline=None)
@given(corpus=st.lists(_texts, min_size=1, max_size=5), other=_texts)
def test_pieces_kept_for_any_corpus_and_other_text_still_encodes(
    full: CLIPTokenizer, corpus: list[str], other: str
) -> None:
    small = full.restricted_to(corpus)
    for text in corpus:
        assert _pieces(small, text) == _pieces(full, text)
    # A text outside the corpus falls back to shorter pieces but reads back the same.
    assert small.decode(small(other)[0]) == full.decode(full(other)[0])
    assert "".join(_pieces(small, other)) == "".join(_pieces(full, other))


def test_non_ascii_outside_the_corpus_reads_back(small: CLIPTokenizer) -> None:
    text = "a zebra-striped jekyll, ümlaut 42 <|mask|>"
    assert small.decode(small(text)[0]) == "a zebra - striped jekyll , ümlaut 4 2 <|mask|>"


def test_without_a_mask_token(full: CLIPTokenizer) -> None:
    small = CLIPTokenizer().restricted_to(CORPUS)
    assert small.mask_token_id is None
    assert small.vocab_size == full.restricted_to(CORPUS).vocab_size - 1
    assert _pieces(small, CORPUS[0]) == _pieces(full, CORPUS[0])


def test_saved_config_and_pickle_round_trip(small: CLIPTokenizer, tmp_path: Path) -> None:
    config = small.to_config()
    assert config["files"] == ["vocab.json", "merges.txt"]
    for name, data in small.vocabulary_files().items():
        (tmp_path / name).write_bytes(data)
    loaded = get_tokenizer(config["type"]).from_config(config, tmp_path)
    assert loaded.vocab_size == small.vocab_size
    assert loaded(CORPUS).equal(small(CORPUS))
    assert pickle.loads(pickle.dumps(small))(CORPUS).equal(small(CORPUS))


def test_bad_texts_are_named(full: CLIPTokenizer) -> None:
    with pytest.raises(TypeError, match="texts must be a sequence of captions, got one str"):
        full.restricted_to("a man")
    with pytest.raises(TypeError, match=r"texts\[1\] must be a str, got int"):
        full.restricted_to(["a man", 3])  # type: ignore[list-item]
