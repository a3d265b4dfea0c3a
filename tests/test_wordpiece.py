"""WordPieceTokenizer: parity with transformers' Python BERT tokenizer, hand-checked pieces,
saving, configs, the tokenizer registry and errors."""

from __future__ import annotations

import os
import pickle
import string
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

import textreid.wordpiece as wordpiece_module
from textreid.tokenization import (
    CLIPTokenizer,
    get_tokenizer,
    list_tokenizers,
    register_tokenizer,
)
from textreid.wordpiece import WordPieceTokenizer

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
WORDS = (  # noqa: SIM905 (a word list reads best as text)
    "a an the woman man girl boy person in on with and of is wear ##s wearing carry ##ing ##ed "
    "##er ##es ##ly red black white blue green dark light coat jacket shirt t - shirt pant pants "
    "jean ##s bag back ##pack shoe shoulder hair long short un ##aff ##able ##ffa ##b ##le "
    "straw ##berry berry caf ##e cafe naive resume 人 女 一 大 衣 ##人 ñ ü é ß ø σ ς ##σ "
    "1 2 10 100 ##0 ##00 x ##x"
).split()
PUNCTUATION = [*string.punctuation, "“", "”", "…", "¿", "—", "·", "「", "」"]
ALPHABET = [*string.ascii_lowercase, *string.digits]
VOCAB = list(
    dict.fromkeys([*SPECIALS, *WORDS, *PUNCTUATION, *ALPHABET, *("##" + c for c in ALPHABET)])
)


def write_vocab(path: Path, tokens: list[str] = VOCAB) -> Path:
    """A ``vocab.txt``: one token per line, the line number is the id."""
    path.write_text("\n".join(tokens) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def vocab_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_vocab(tmp_path_factory.mktemp("wordpiece") / "vocab.txt")


def _reference(vocab_file: Path, lowercase: bool) -> Any:
    transformers = pytest.importorskip("transformers")
    # transformers 5 renamed the Python tokenizer; in 4.x BertTokenizer is that one.
    cls = getattr(transformers, "BertTokenizerLegacy", None) or transformers.BertTokenizer
    return cls(str(vocab_file), do_lower_case=lowercase)


def _ids(tok: WordPieceTokenizer, text: str) -> list[int]:
    return [tok.cls_token_id, *tok.encode(text), tok.sep_token_id]


# -- parity with transformers ----------------------------------------------------------------

fragment = st.one_of(
    st.sampled_from(
        [
            *WORDS,
            *SPECIALS,
            " ",
            "  ",
            "\t",
            "\n",
            "\r\n",
            "\u00a0",  # Zs: a space
            "\u3000",  # Zs: ideographic space
            "\u2028",  # Zl: kept by cleaning, a split point for whitespace splitting
            "\x00",
            "\x07",
            "\x85",
            "\ufffd",
            "\u200b",  # Cf: dropped
            "\u0301",  # a combining acute accent
            "e\u0301",
            "Café",
            "NAÏVE",
            "Straße",
            "ΣΑΣ",
            "㐀",
            "豈",  # a CJK compatibility ideograph (NFC maps it to 豈)
            "한국어",
            "ﬁ",
            "x" * 100,
            "y" * 101,
            "[C\x00LS]",
            "[cls]",
        ]
    ),
    st.text(alphabet=[*ALPHABET, *string.ascii_uppercase, *PUNCTUATION], max_size=8),
    st.text(max_size=6),
)
caption = st.lists(fragment, max_size=14).map("".join)


@pytest.mark.parity
@settings(max_examples=80)
@given(texts=st.lists(caption, min_size=1, max_size=6), lowercase=st.booleans())
@example(texts=["A WOMAN in a Red Coat, carrying un-affable bags!!"], lowercase=True)
@example(texts=["[CLS] a[SEP]b [MASK]x[PAD]", "e\u0301 \u0301 a\u0301\u0301"], lowercase=True)
@example(texts=["Café NAÏVE 人們女一 Straße ΣΑΣ", "y" * 101], lowercase=False)
def test_ids_equal_transformers(vocab_file: Path, texts: list[str], lowercase: bool) -> None:
    ref = _reference(vocab_file, lowercase)
    tok = WordPieceTokenizer(vocab_file, context_length=24, lowercase=lowercase)
    expected = ref(texts, padding="max_length", max_length=24, truncation=True)["input_ids"]
    assert tok(texts).tolist() == expected
    for text in texts:
        assert tok.encode(text) == ref.encode(text, add_special_tokens=False)


@pytest.mark.parity
def test_saved_vocabulary_reads_back_in_transformers(vocab_file: Path, tmp_path: Path) -> None:
    tok = WordPieceTokenizer(vocab_file)
    (saved,) = tok.save_vocabulary(tmp_path)
    assert Path(saved).read_bytes() == vocab_file.read_bytes()
    ref = _reference(Path(saved), True)
    assert ref.get_vocab() == tok.get_vocab()


# -- hand-checked pieces ---------------------------------------------------------------------


def test_pieces_by_hand(vocab_file: Path) -> None:
    tok = WordPieceTokenizer(vocab_file, context_length=16)
    v = tok.get_vocab()

    def pieces(text: str) -> list[str]:
        return [VOCAB[i] for i in tok.encode(text)]

    # Longest match first: "unaffable" is un + ##aff + ##able although ##a, ##f... exist.
    assert pieces("unaffable") == ["un", "##aff", "##able"]
    # Greedy, not optimal: "strawberry" takes "straw" first, then the longest continuation.
    assert pieces("Strawberry") == ["straw", "##berry"]
    # Uncased: accents go after NFD (é -> e), case folds, punctuation splits.
    assert pieces("CAFÉ-naïve!") == ["cafe", "-", "naive", "!"]
    # CJK ideographs become words of their own even without spaces; Hangul does not.
    assert pieces("大人衣") == ["大", "人", "衣"]
    assert pieces("한국") == ["[UNK]"]
    # A word no pieces spell is one [UNK], whatever its length; so is any word over 100.
    assert pieces("qwq") == ["q", "##w", "##q"]
    assert pieces("x" * 100) == ["x", *["##x"] * 99]
    assert pieces("x" * 101) == ["[UNK]"]
    assert pieces("\u00e7") == ["c"]  # ç loses its cedilla
    # Control characters vanish, odd spaces split, special strings are kept whole.
    assert tok.encode("red\x00coat") == tok.encode("redcoat")
    assert pieces("red\u00a0coat[SEP]x") == ["red", "coat", "[SEP]", "x"]
    row = tok("A red coat.")[0].tolist()
    assert row == [v["[CLS]"], v["a"], v["red"], v["coat"], v["."], v["[SEP]"], *[0] * 10]


def test_cased_keeps_case_and_accents(vocab_file: Path) -> None:
    tok = WordPieceTokenizer(vocab_file, lowercase=False)
    # Capitals are not in the test vocabulary; é is, and stays é.
    assert [VOCAB[i] for i in tok.encode("Red é")] == ["[UNK]", "é"]


def test_truncation_and_padding(vocab_file: Path) -> None:
    tok = WordPieceTokenizer(vocab_file, context_length=5)
    v = tok.get_vocab()
    ids, cut = tok(["a red coat and a bag", "a"], return_truncated=True)
    assert ids.dtype == torch.long
    assert ids.shape == (2, 5)
    assert ids[0].tolist() == [v["[CLS]"], v["a"], v["red"], v["coat"], v["[SEP]"]]
    assert ids[1].tolist() == [v["[CLS]"], v["a"], v["[SEP]"], 0, 0]
    assert cut.tolist() == [True, False]
    assert tok("a", context_length=3).tolist() == [[v["[CLS]"], v["a"], v["[SEP]"]]]
    with pytest.raises(
        ValueError, match="WordPieceTokenizer: caption 0 has 7 tokens > context_length 5"
    ):
        tok(["a red coat and a"], truncate=False)


def test_decode(vocab_file: Path) -> None:
    tok = WordPieceTokenizer(vocab_file, context_length=24)
    ids = tok("A WOMAN carrying a back-pack; qwq")
    assert tok.decode(ids[0]) == "a woman carrying a back - pack ; qwq"
    assert tok.batch_decode(ids) == ["a woman carrying a back - pack ; qwq"]
    assert tok.decode([2, 5, 3, 0], skip_special_tokens=False) == "[CLS] a [SEP] [PAD]"
    assert tok.decode(tok("y" * 101)[0]) == "[UNK]"
    with pytest.raises(ValueError, match=r"decode: ids holds 9999, outside the vocabulary"):
        tok.decode([9999])
    with pytest.raises(TypeError, match="decode: ids must be a 1-D integer tensor"):
        tok.decode("a")  # type: ignore[arg-type]


def test_special_ids_and_properties(vocab_file: Path) -> None:
    tok = WordPieceTokenizer(vocab_file)
    assert (tok.pad_token_id, tok.unk_token_id, tok.cls_token_id, tok.sep_token_id) == (0, 1, 2, 3)
    assert tok.mask_token_id == 4
    assert tok.vocab_size == len(VOCAB)
    assert "WordPieceTokenizer(vocab_size=" in repr(tok)
    clone = pickle.loads(pickle.dumps(tok))
    assert torch.equal(clone("a red coat"), tok("a red coat"))


def test_mask_is_optional_and_then_plain_text(tmp_path: Path) -> None:
    path = write_vocab(tmp_path / "vocab.txt", [t for t in VOCAB if t != "[MASK]"])
    tok = WordPieceTokenizer(path)
    assert tok.mask_token_id is None
    # Not split off as a special token; a word equal to it is kept whole (as BERT keeps
    # its special words), and no pieces spell it here.
    assert tok.encode("a [MASK]") == [tok.get_vocab()["a"], tok.unk_token_id]


# -- configs, saving, the registry -----------------------------------------------------------


def test_config_round_trip(vocab_file: Path, tmp_path: Path) -> None:
    tok = WordPieceTokenizer(vocab_file, context_length=33, lowercase=False)
    config = tok.to_config()
    assert config == {
        "type": "bert_wordpiece",
        "context_length": 33,
        "lowercase": False,
        "files": ["vocab.txt"],
    }
    tok.save_vocabulary(tmp_path)
    back = get_tokenizer(config["type"]).from_config(config, tmp_path)
    assert isinstance(back, WordPieceTokenizer)
    assert (back.context_length, back.lowercase) == (33, False)
    texts = ["Café NAÏVE", "a red coat, 人"]
    assert torch.equal(back(texts), tok(texts))
    assert tok.vocabulary_files() == {"vocab.txt": vocab_file.read_bytes()}


def test_saved_vocabulary_gets_the_umask(vocab_file: Path, tmp_path: Path) -> None:
    old = os.umask(0o027)
    try:
        (saved,) = WordPieceTokenizer(vocab_file).save_vocabulary(tmp_path)
    finally:
        os.umask(old)
    assert os.stat(saved).st_mode & 0o777 == 0o640
    assert [p.name for p in tmp_path.iterdir()] == ["vocab.txt"]


def test_from_config_errors(vocab_file: Path) -> None:
    good = WordPieceTokenizer(vocab_file).to_config()
    fn = "WordPieceTokenizer.from_config"
    with pytest.raises(ValueError, match=rf"{fn}: unknown tokenizer config keys \['merges'\]"):
        WordPieceTokenizer.from_config({**good, "merges": 1}, vocab_file.parent)
    with pytest.raises(ValueError, match=rf"{fn}: files must be \['vocab.txt'\]"):
        WordPieceTokenizer.from_config({**good, "files": ["../x.txt"]}, vocab_file.parent)
    with pytest.raises(ValueError, match=f"{fn}: the config lists tokenizer files"):
        WordPieceTokenizer.from_config(good)
    with pytest.raises(ValueError, match=r"config\['type'\]"):
        WordPieceTokenizer.from_config({**good, "type": "clip_bpe"}, vocab_file.parent)
    with pytest.raises(TypeError, match=f"{fn}: config must be a mapping"):
        WordPieceTokenizer.from_config([1], vocab_file.parent)  # type: ignore[arg-type]


def test_registry() -> None:
    assert {"bert_wordpiece", "clip_bpe"} <= set(list_tokenizers())
    assert get_tokenizer("bert_wordpiece") is WordPieceTokenizer
    assert get_tokenizer("clip_bpe") is CLIPTokenizer
    with pytest.raises(ValueError, match=r"get_tokenizer: unknown tokenizer type 'bert'"):
        get_tokenizer("bert")
    with pytest.raises(ValueError, match="already registered"):
        register_tokenizer("bert_wordpiece", WordPieceTokenizer)
    with pytest.raises(ValueError, match=r"differs from CLIPTokenizer\.config_type 'clip_bpe'"):
        register_tokenizer("mine", CLIPTokenizer)
    with pytest.raises(TypeError, match="register_tokenizer: cls must be a tokenizer class"):
        register_tokenizer("mine", object)  # type: ignore[arg-type]


# -- bad vocabularies ------------------------------------------------------------------------


def test_missing_vocabulary(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"WordPieceTokenizer: vocabulary .*none.txt does"):
        WordPieceTokenizer(tmp_path / "none.txt")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"[PAD]\n[UNK]\n[CLS]\n", r"has no \[SEP\]; a BERT vocab.txt lists"),
        (b"[PAD]\n[UNK]\n[CLS]\n[SEP]\na\na\n", r"lists 'a' on lines 5 and 6"),
        (b"[PAD]\n[UNK]\n\n[CLS]\n[SEP]\n", r"line 3 holds ''"),
        (b"[PAD]\n[UNK] \n[CLS]\n[SEP]\n", r"line 2 holds '\[UNK\] '"),
        (b"[PAD]\n[UNK]\n[CLS]\n[SEP]\n\xff\n", "is not UTF-8 text"),
        (b'{"[PAD]": 0, "[UNK]": 1}', r"has no \[CLS\], \[SEP\]"),
    ],
)
def test_bad_vocabulary(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "vocab.txt"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=rf"WordPieceTokenizer: vocabulary .*vocab.txt {message}"):
        WordPieceTokenizer(path)


def test_oversized_or_odd_files_are_refused_before_reading(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_vocab(tmp_path / "vocab.txt")
    monkeypatch.setattr(wordpiece_module, "_MAX_FILE_BYTES", path.stat().st_size - 1)
    with pytest.raises(ValueError, match=r"WordPieceTokenizer: .*vocab.txt has \d+ bytes, more"):
        WordPieceTokenizer(path)
    with pytest.raises(ValueError, match="is not a regular file"):
        WordPieceTokenizer(tmp_path)


def test_argument_errors(vocab_file: Path) -> None:
    with pytest.raises(ValueError, match="context_length"):
        WordPieceTokenizer(vocab_file, context_length=1)
    with pytest.raises(TypeError, match="WordPieceTokenizer: lowercase must be a bool"):
        WordPieceTokenizer(vocab_file, lowercase="yes")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="WordPieceTokenizer: vocab_file must be a path"):
        WordPieceTokenizer(3)  # type: ignore[arg-type]
    tok = WordPieceTokenizer(vocab_file)
    with pytest.raises(TypeError, match=r"WordPieceTokenizer: texts\[1\] must be a str"):
        tok(["a", 2])  # type: ignore[list-item]
    with pytest.raises(TypeError, match=r"WordPieceTokenizer\.encode: text must be a str"):
        tok.encode(None)  # type: ignore[arg-type]
