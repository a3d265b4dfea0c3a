"""IVT's released checkpoints become retriever folders (``convert_ivt_checkpoint``,
``textreid convert --from ivt``).

The checkpoint is built and saved the way IVT's code saves it by the helpers of
``tests/models/test_convert_ivt.py``, whose straight-line float64 forward over the *source*
tensors is the reference here too: the loaded retriever's caption and image embeddings (its
own WordPiece tokenizer, padding mask and bicubic 0.5/0.5 preprocessing included) must equal
it.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from tests.models.test_convert_ivt import (
    CLS,
    PAD,
    POSITIONS,
    SEP,
    SIZE,
    VOCAB,
    _ivt_state_dict,
    _ref_image,
    _ref_text,
    _save_released,
)
from textreid.cli import main
from textreid.convert import convert_ivt_checkpoint
from textreid.hub import Retriever
from textreid.models import SingleStreamEncoder
from textreid.retrieval.models import IVTSingleStreamModel
from textreid.wordpiece import WordPieceTokenizer

# The tiny checkpoint's 50 ids as a BERT vocabulary: [PAD] 0, [CLS] 1, [SEP] 2 as the
# reference test's ids, then words and pieces.
TOKENS = [
    "[PAD]",
    "[CLS]",
    "[SEP]",
    "[UNK]",
    "[MASK]",
    *(  # noqa: SIM905 (a word list reads best as text)
        "a woman man in the red black white blue coat jacket shirt bag back ##pack shoe ##s "
        "with and carry ##ing long short hair jean pant dark light , . - ! t 1 2 "
        "x ##x ##e caf ##a ##b ##c ##d ##k p"
    ).split(),
]
assert len(TOKENS) == VOCAB
assert (TOKENS.index("[CLS]"), TOKENS.index("[SEP]"), TOKENS.index("[PAD]")) == (CLS, SEP, PAD)

CAPTIONS = [
    "A woman in a red coat.",
    "The man with a BLACK backpack, carrying bags",
    "a woman in a red coat with a white bag and a dark jacket, jeans, shoes",
]


def _vocab(tmp_path: Path, tokens: list[str] = TOKENS) -> Path:
    path = tmp_path / "vocab.txt"
    path.write_text("\n".join(tokens) + "\n", encoding="utf-8")
    return path


def _hand_ids() -> Tensor:
    """The ids of ``CAPTIONS`` spelled out piece by piece (the last one is cut at 16)."""
    v = {t: i for i, t in enumerate(TOKENS)}
    rows = [
        "a woman in a red coat .",
        "the man with a black back ##pack , carry ##ing bag ##s",
        "a woman in a red coat with a white bag and a dark jacket",
    ]
    ids = torch.full((3, POSITIONS), PAD)
    for r, row in enumerate(rows):
        pieces = [CLS, *(v[p] for p in row.split()), SEP]
        ids[r, : len(pieces)] = torch.tensor(pieces)
    return ids


def _images() -> list[Tensor]:
    g = torch.Generator().manual_seed(11)
    return [
        torch.randint(0, 256, (3, 57 + 9 * i, 31 + 4 * i), generator=g).byte() for i in range(2)
    ]


def _ref_preprocess(image: Tensor) -> Tensor:
    """IVT's test transform written out: PIL bicubic resize, /255, (x - 0.5) / 0.5."""
    pil = Image.fromarray(image.permute(1, 2, 0).numpy())
    resized = np.asarray(pil.resize((SIZE[1], SIZE[0]), Image.Resampling.BICUBIC))
    x = torch.from_numpy(resized.copy()).permute(2, 0, 1).double() / 255
    return (x - 0.5) / 0.5


@pytest.fixture
def converted(tmp_path: Path) -> tuple[Path, dict[str, Tensor]]:
    raw = _ivt_state_dict()
    ckpt = _save_released(raw, tmp_path / "checkpoint_best.pth")
    out = convert_ivt_checkpoint(
        ckpt, tmp_path / "ivt", vocab_file=_vocab(tmp_path), image_size=SIZE
    )
    return out, {k[len("module.") :]: v.double() for k, v in raw.items()}


def test_loaded_folder_embeds_as_the_reference_forward(
    converted: tuple[Path, dict[str, Tensor]],
) -> None:
    folder, src = converted
    retriever = Retriever.from_pretrained(folder)
    assert retriever.architecture == "ivt-single-stream"
    assert isinstance(retriever.tokenizer, WordPieceTokenizer)
    assert retriever.tokenizer.context_length == POSITIONS
    pre = retriever.preprocess
    assert (pre.image_size, pre.interpolation) == (SIZE, "bicubic")
    assert pre.mean == pre.std == (0.5, 0.5, 0.5)

    ids = _hand_ids()
    assert torch.equal(retriever.tokenizer(CAPTIONS), ids)
    got = retriever.encode_text(CAPTIONS)
    assert isinstance(got, Tensor)
    expected = F.normalize(_ref_text(src, ids, ids != PAD), dim=-1)
    torch.testing.assert_close(got.double(), expected, rtol=1e-4, atol=1e-5)

    images = _images()
    got_img = retriever.encode_images(images)
    assert isinstance(got_img, Tensor)
    ref_in = torch.stack([_ref_preprocess(im) for im in images])
    expected_img = F.normalize(_ref_image(src, ref_in), dim=-1)
    torch.testing.assert_close(got_img.double(), expected_img, rtol=1e-4, atol=1e-5)


def test_the_bert_padding_rule_is_what_makes_it_right(
    converted: tuple[Path, dict[str, Tensor]],
) -> None:
    folder, src = converted
    model = Retriever.from_pretrained(folder).retrieval_model
    assert isinstance(model, IVTSingleStreamModel)
    assert model.pad_token_id == PAD
    ids = _hand_ids()
    expected = F.normalize(_ref_text(src, ids, ids != PAD), dim=-1).float()
    # CLIP's rule (padding after the largest id) masks the wrong positions of BERT ids.
    clip_rule = IVTSingleStreamModel(model.encoder)
    with torch.no_grad():
        wrong = clip_rule.encode_text(ids)["global"]
    assert (wrong - expected).abs().amax(dim=-1).min() > 1e-3


def test_the_cli_writes_the_same_folder(
    converted: tuple[Path, dict[str, Tensor]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder, _ = converted
    ckpt = tmp_path / "checkpoint_best.pth"
    argv = ["convert", "--from", "ivt", str(ckpt), str(tmp_path / "cli"), "--vocab"]
    size = ["--image-size", str(SIZE[0]), str(SIZE[1])]
    assert main([*argv, str(tmp_path / "vocab.txt"), *size]) == 0
    assert "converted" in capsys.readouterr().out
    py, cli = (json.loads((f / "config.json").read_text()) for f in (folder, tmp_path / "cli"))
    assert cli == py
    assert (tmp_path / "cli" / "vocab.txt").read_bytes() == (folder / "vocab.txt").read_bytes()
    a, b = Retriever.from_pretrained(folder), Retriever.from_pretrained(tmp_path / "cli")
    assert a.model_fingerprint == b.model_fingerprint
    assert torch.equal(a.encode_text(CAPTIONS), b.encode_text(CAPTIONS))  # type: ignore[arg-type]


def test_the_cli_needs_a_vocabulary_for_ivt_only(
    converted: tuple[Path, dict[str, Tensor]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ckpt, out = str(tmp_path / "checkpoint_best.pth"), str(tmp_path / "cli")
    assert main(["convert", "--from", "ivt", ckpt, out]) == 2
    assert "textreid convert: error: --from ivt needs --vocab" in capsys.readouterr().err
    vocab = str(tmp_path / "vocab.txt")
    assert main(["convert", "--from", "irra", ckpt, out, "--vocab", vocab]) == 2
    assert "textreid convert: error: --from irra takes no --vocab" in capsys.readouterr().err
    assert main(["convert", "--from", "ivt", ckpt, out, "--vocab", str(tmp_path / "no.txt")]) == 2
    assert "convert_ivt_checkpoint: vocab_file" in capsys.readouterr().err
    assert not Path(out).exists()


def test_missing_files(tmp_path: Path) -> None:
    ckpt = _save_released(_ivt_state_dict(), tmp_path / "ivt.pth")
    with pytest.raises(FileNotFoundError, match=r"convert_ivt_checkpoint: vocab_file .*no.txt"):
        convert_ivt_checkpoint(ckpt, tmp_path / "out", vocab_file=tmp_path / "no.txt")
    with pytest.raises(FileNotFoundError, match=r"convert_ivt_checkpoint: checkpoint .*none.pth"):
        convert_ivt_checkpoint(tmp_path / "none.pth", tmp_path / "out", vocab_file=ckpt)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("tokens", "message"),
    [
        (TOKENS[:2] + TOKENS[3:], r"WordPieceTokenizer: vocabulary .* has no \[SEP\]"),
        ([*TOKENS[:10], "a", *TOKENS[10:]], r"lists 'a' on lines 6 and 11"),
        ([*TOKENS, "extra"], r"lists 51 tokens but the checkpoint's word embedding has 50 rows"),
    ],
)
def test_a_bad_vocabulary_is_refused_naming_it(
    tmp_path: Path, tokens: list[str], message: str
) -> None:
    ckpt = _save_released(_ivt_state_dict(), tmp_path / "ivt.pth")
    with pytest.raises(ValueError, match=rf"convert_ivt_checkpoint: .*{message}"):
        convert_ivt_checkpoint(
            ckpt, tmp_path / "out", vocab_file=_vocab(tmp_path, tokens), image_size=SIZE
        )
    assert not (tmp_path / "out").exists()


def test_pad_token_id_round_trips_and_is_checked() -> None:
    encoder = SingleStreamEncoder(
        image_size=SIZE, patch_size=8, stride=6, vocab_size=VOCAB, max_text_len=POSITIONS,
        width=64, depth=1, heads=2,
    )  # fmt: skip
    for pad in (None, 0, 7):
        model = IVTSingleStreamModel(encoder, pad_token_id=pad)
        config = model.config_dict()
        assert config["pad_token_id"] == pad
        assert IVTSingleStreamModel.from_config(config).config_dict() == config
    for bad in (-1, VOCAB):
        with pytest.raises(ValueError, match="IVTSingleStreamModel: pad_token_id must be"):
            IVTSingleStreamModel(encoder, pad_token_id=bad)
    with pytest.raises(TypeError, match="IVTSingleStreamModel: pad_token_id must be"):
        IVTSingleStreamModel(encoder, pad_token_id=True)
    config = IVTSingleStreamModel(encoder).config_dict()
    del config["pad_token_id"]
    with pytest.raises(ValueError, match=r"missing \['pad_token_id'\]"):
        IVTSingleStreamModel.from_config(config)


def test_an_unregistered_tokenizer_type_names_the_file_and_the_remedy(
    converted: tuple[Path, dict[str, Tensor]],
) -> None:
    folder, _ = converted
    (folder / "textreid_manifest.json").unlink()
    config = json.loads((folder / "config.json").read_text())
    config["tokenizer"]["type"] = "sentencepiece"
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(
        ValueError,
        match=r"from_pretrained: .*config.json names tokenizer type 'sentencepiece', which is "
        r"not registered \(registered: .*bert_wordpiece.*\).*register_tokenizer",
    ):
        Retriever.from_pretrained(folder)
    config["tokenizer"] |= {"type": "bert_wordpiece", "files": ["vocab.txt", "config.json"]}
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"WordPieceTokenizer.from_config: files must be"):
        Retriever.from_pretrained(folder)
