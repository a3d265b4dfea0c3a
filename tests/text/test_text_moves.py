"""The text-preparation utilities live in ``textreid.text``; their old homes still resolve.

Old paths (``textreid.losses.mask_for_mlm``, ``textreid.losses.attribute_mask.*``, the whole
``textreid.losses.probabilistic`` module) follow the deprecation policy: each lookup warns with a
``FutureWarning`` naming the replacement and returns the very same object.
"""

from __future__ import annotations

import importlib
import inspect
import re
import warnings

import pytest

import textreid.text

MOVED = {
    "textreid.losses": {
        "mask_for_mlm": "textreid.text.mask_for_mlm",
        "phrase_level_text": "textreid.text.phrase_level_text",
        "word_level_text": "textreid.text.word_level_text",
    },
    "textreid.losses.mlm": {"mask_for_mlm": "textreid.text.mask_for_mlm"},
    "textreid.losses.mla": {
        "phrase_level_text": "textreid.text.phrase_level_text",
        "word_level_text": "textreid.text.word_level_text",
    },
    "textreid.losses.attribute_mask": {
        name: f"textreid.text.{name}"
        for name in (
            "PEDESTRIAN_ATTRIBUTE_WORDS",
            "PEDESTRIAN_COLOR_WORDS",
            "PEDESTRIAN_GARMENT_WORDS",
            "AttributeMasking",
            "attribute_positions",
            "attribute_token_sequences",
            "mask_attribute_tokens",
        )
    },
    "textreid.losses.probabilistic": {
        "CSDLoss": "textreid.losses.CSDLoss",
        "DistributionContrastLoss": "textreid.losses.DistributionContrastLoss",
        "GaussianKLLoss": "textreid.losses.GaussianKLLoss",
        "PCMELoss": "textreid.losses.PCMELoss",
        "PointContrastLoss": "textreid.losses.PointContrastLoss",
        "csd_loss": "textreid.losses.functional.csd_loss",
        "distribution_contrast_loss": "textreid.losses.functional.distribution_contrast_loss",
        "gaussian_kl_loss": "textreid.losses.functional.gaussian_kl_loss",
        "pcme_loss": "textreid.losses.functional.pcme_loss",
        "point_contrast_loss": "textreid.losses.functional.point_contrast_loss",
        "pseudo_positive_match": "textreid.losses.csd.pseudo_positive_match",
    },
}


def _resolve(dotted: str) -> object:
    module, _, attr = dotted.rpartition(".")
    return getattr(importlib.import_module(module), attr)


@pytest.mark.parametrize(
    ("module", "name", "target"),
    [(m, n, t) for m, names in MOVED.items() for n, t in names.items()],
    ids=lambda v: str(v),
)
def test_old_path_warns_naming_the_new_one_and_returns_it(
    module: str, name: str, target: str
) -> None:
    mod = importlib.import_module(module)
    message = (
        f"{re.escape(module)}.{name} is deprecated since textreid 0.1 and will be removed in "
        f"1.0; use {re.escape(target)} instead"
    )
    with pytest.warns(FutureWarning, match=message):
        obj = getattr(mod, name)
    assert obj is _resolve(target)


def test_from_import_warning_points_at_the_importing_line() -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        line = inspect.currentframe().f_lineno + 1  # type: ignore[union-attr]
        from textreid.losses import mask_for_mlm
    assert mask_for_mlm is textreid.text.mask_for_mlm
    # from-imports of a package look the name up twice (importlib's fromlist check, then the
    # import itself); both warnings name this line, so the default filter shows one.
    assert caught
    assert {(w.filename, w.lineno) for w in caught} == {(__file__, line)}


def test_moved_names_are_no_longer_listed_where_they_were() -> None:
    for module, names in MOVED.items():
        listed = getattr(importlib.import_module(module), "__all__", [])
        assert not set(names) & set(listed), module


def test_unknown_names_still_raise_attribute_error() -> None:
    import textreid.losses

    with pytest.raises(AttributeError, match=r"module 'textreid\.losses' has no attribute 'nope'"):
        _ = textreid.losses.nope


def test_every_text_utility_is_exported_and_served_from_its_old_home() -> None:
    served = {t.rpartition(".")[2] for names in MOVED.values() for t in names.values()}
    # Added to textreid.text after the move, so it has no old home to be served from.
    added_since = {"caption_key_mask"}
    assert set(textreid.text.__all__) - added_since <= served
