"""SynthPEDES: a procedurally generated text-to-image person retrieval dataset.

Identities are combinations of fine-grained attributes (gender, build, hair length and colour,
upper garment type / colour / pattern, lower garment type and colour, shoe colour, bag,
backpack, hat, glasses, umbrella). They come in *families*: a random base identity and
``family_size - 1`` near neighbours that differ from it in exactly one attribute, so only
fine-grained alignment tells family members apart. Every identity is drawn several times with
PIL (head, hair, torso, arms, legs, shoes, accessories) under a varying viewpoint (front /
back / side), pose, scale, position, background clutter, lighting, blur and occlusion, and each
image gets captions from a varied grammar that only mention attributes visible from its
viewpoint (glasses only from the front, a backpack only from the back or side).

The output is in the CUHK-PEDES layout and read by the same reader
(:func:`textreid.data.read_synthpedes`, registry name ``"synthpedes"``)::

    root/CUHK-PEDES/reid_raw.json       [{"split", "captions", "file_path", "processed_tokens", "id"}]
    root/CUHK-PEDES/imgs/synth/*.png
    root/CUHK-PEDES/synthpedes.json     generation record: config, attributes, viewpoints

Generation is deterministic: the same configuration writes byte-identical files.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import re
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from textreid._checks import check_positive, check_unit_interval

__all__ = ["SYNTHPEDES_FORMAT_VERSION", "SynthPEDESConfig", "write_synthpedes"]

SYNTHPEDES_FORMAT_VERSION = 1
"""Version of the ``synthpedes.json`` generation record."""

Identity = dict[str, str]
_RGB = tuple[int, int, int]

_PALETTE: dict[str, _RGB] = {
    "red": (205, 30, 35),
    "orange": (245, 135, 20),
    "yellow": (245, 225, 40),
    "green": (35, 150, 55),
    "blue": (30, 70, 210),
    "purple": (125, 45, 165),
    "pink": (250, 150, 195),
    "white": (240, 240, 240),
    "black": (22, 22, 22),
    "gray": (130, 130, 130),
    "brown": (105, 60, 25),
    "khaki": (195, 170, 115),
    "blonde": (230, 200, 95),
}
_SKIN: tuple[_RGB, ...] = ((240, 200, 170), (200, 150, 110), (140, 95, 65))

# Attribute values. Keys of an identity dict; "none" marks an absent accessory.
_GENDERS = ("male", "female")
_BUILDS = ("thin", "average", "heavy")
_HAIR_LENGTHS = ("short", "long")
_HAIR_COLOURS = ("black", "brown", "blonde", "gray")
_UPPER_TYPES = ("t-shirt", "jacket", "coat")
_UPPER_COLOURS = ("red", "orange", "yellow", "green", "blue", "purple", "pink", "white", "black")
_PATTERNS = ("plain", "striped", "checked")
_LOWER_COLOURS = ("black", "blue", "gray", "khaki", "white", "red")
_SHOE_COLOURS = ("black", "white", "brown", "red")
_ACC_COLOURS = ("black", "red", "blue", "yellow", "green")
_COLOURED_ACCESSORIES = ("bag", "backpack", "hat", "umbrella")
_ACC_PROB = {"bag": 0.3, "backpack": 0.3, "hat": 0.25, "glasses": 0.25, "umbrella": 0.12}
_MUTABLE = (
    "build",
    "hair_length",
    "hair_colour",
    "upper_type",
    "upper_colour",
    "upper_pattern",
    "lower_type",
    "lower_colour",
    "shoes_colour",
    "bag",
    "backpack",
    "hat",
    "glasses",
    "umbrella",
)
_VIEWS = ("front", "back", "side")
_VISIBLE_FROM = {"glasses": ("front",), "backpack": ("back", "side")}

# Caption vocabulary.
_COLOUR_WORDS = {
    "gray": ("gray", "grey"),
    "blonde": ("blonde", "blond"),
    "khaki": ("khaki", "beige"),
}
_NOUNS = {
    "male": ("man", "male", "guy", "gentleman", "young man"),
    "female": ("woman", "female", "lady", "girl", "young woman"),
}
_BUILD_WORDS = {
    "thin": ("thin", "slim", "skinny", "slender"),
    "average": ("medium-build", "average-sized"),
    "heavy": ("heavy", "heavyset", "stocky", "chubby"),
}
_HAIR_LENGTH_WORDS = {"short": ("short",), "long": ("long", "shoulder-length")}
_UPPER_WORDS = {
    "t-shirt": ("t-shirt", "tee", "short-sleeved shirt"),
    "jacket": ("jacket", "long-sleeved jacket"),
    "coat": ("coat", "long coat", "overcoat"),
}
_PATTERN_WORDS = {
    "plain": ("plain", "solid"),
    "striped": ("striped",),
    "checked": ("checked", "plaid", "checkered"),
}
_PATTERN_SUFFIX = {"plain": "", "striped": " with stripes", "checked": " with a checked pattern"}
_LOWER_WORDS = {
    "trousers": ("trousers", "pants", "long pants"),
    "shorts": ("shorts",),
    "skirt": ("skirt",),
}
_ACC_WORDS = {
    "bag": ("bag", "shoulder bag", "handbag"),
    "backpack": ("backpack", "rucksack"),
    "hat": ("hat", "cap"),
    "umbrella": ("umbrella",),
}
_VIEW_SENTENCES = {
    "front": ("{S} is facing the camera.", "{S} is walking toward the camera."),
    "back": ("{S} is facing away from the camera.", "{S} is seen from behind."),
    "side": ("{S} is seen from the side.", "{S} is walking past the camera."),
}


@dataclass(frozen=True)
class SynthPEDESConfig:
    """Settings of :func:`write_synthpedes`.

    Attributes:
        num_identities: number of person identities.
        images_per_identity: images rendered per identity.
        captions_per_image: captions written per image.
        image_size: rendered ``(H, W)`` in pixels (at least ``(32, 16)``).
        seed: seed of everything random; the same config gives byte-identical files.
        family_size: identities per near-neighbour family: a random base identity and
            ``family_size - 1`` variants differing from it in exactly one attribute. Families
            stay within one split, so test galleries contain near neighbours.
        split_fractions: ``(train, val, test)`` fractions of families (normalised).
        occlusion_prob: probability that a pole occludes part of the person.
        blur_prob: probability of a Gaussian blur (radius 0.3-0.8 px).
    """

    num_identities: int = 300
    images_per_identity: int = 4
    captions_per_image: int = 2
    image_size: tuple[int, int] = (96, 48)
    seed: int = 0
    family_size: int = 3
    split_fractions: tuple[float, float, float] = (0.7, 0.1, 0.2)
    occlusion_prob: float = 0.15
    blur_prob: float = 0.3

    def __post_init__(self) -> None:
        fn = "SynthPEDESConfig"
        for name in ("num_identities", "images_per_identity", "captions_per_image", "family_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise TypeError(f"{fn}: {name} must be an int, got {type(value).__name__}")
            check_positive(value, name, fn)
        if len(self.image_size) != 2 or self.image_size[0] < 32 or self.image_size[1] < 16:
            raise ValueError(f"{fn}: image_size must be (H, W) >= (32, 16), got {self.image_size}")
        if len(self.split_fractions) != 3 or min(self.split_fractions) < 0:
            raise ValueError(
                f"{fn}: split_fractions must be 3 non-negative (train, val, test) fractions, "
                f"got {self.split_fractions}"
            )
        check_positive(self.split_fractions[0], "split_fractions[0] (train)", fn)
        for name in ("occlusion_prob", "blur_prob"):
            check_unit_interval(getattr(self, name), name, fn)


# ---------------------------------------------------------------------------------------------
# Identities


def _key(ident: Identity) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(ident.items()))


def _values(attr: str, ident: Identity) -> Sequence[str]:
    """Allowed values of ``attr`` given the rest of ``ident`` (skirts are for women here)."""
    table: dict[str, Sequence[str]] = {
        "build": _BUILDS,
        "hair_length": _HAIR_LENGTHS,
        "hair_colour": _HAIR_COLOURS,
        "upper_type": _UPPER_TYPES,
        "upper_colour": _UPPER_COLOURS,
        "upper_pattern": _PATTERNS,
        "lower_type": ("trousers", "shorts", "skirt")
        if ident.get("gender") == "female"
        else ("trousers", "shorts"),
        "lower_colour": _LOWER_COLOURS,
        "shoes_colour": _SHOE_COLOURS,
        "glasses": ("yes", "none"),
    }
    return table.get(attr, (*_ACC_COLOURS, "none"))


def _random_identity(rng: random.Random) -> Identity:
    gender = rng.choice(_GENDERS)
    ident: Identity = {"gender": gender}
    long_hair_p = 0.7 if gender == "female" else 0.15
    ident["hair_length"] = "long" if rng.random() < long_hair_p else "short"
    for attr in ("build", "hair_colour", "upper_type", "upper_colour", "lower_type"):
        ident[attr] = rng.choice(_values(attr, ident))
    ident["upper_pattern"] = rng.choices(_PATTERNS, weights=(0.5, 0.25, 0.25))[0]
    ident["lower_colour"] = rng.choice(_LOWER_COLOURS)
    ident["shoes_colour"] = rng.choice(_SHOE_COLOURS)
    for acc in (*_COLOURED_ACCESSORIES, "glasses"):
        present = rng.random() < _ACC_PROB[acc]
        colour = "yes" if acc == "glasses" else rng.choice(_ACC_COLOURS)
        ident[acc] = colour if present else "none"
    return ident


def _variant(base: Identity, rng: random.Random) -> Identity:
    attr = rng.choice(_MUTABLE)
    choices = [v for v in _values(attr, base) if v != base[attr]]
    return {**base, attr: rng.choice(choices)}


def _make_identities(cfg: SynthPEDESConfig, rng: random.Random) -> list[list[Identity]]:
    """Families of distinct identities (``num_identities`` in total)."""
    seen: set[tuple[tuple[str, str], ...]] = set()
    families: list[list[Identity]] = []
    remaining = cfg.num_identities
    while remaining:
        base = _random_identity(rng)
        while _key(base) in seen:
            base = _random_identity(rng)
        seen.add(_key(base))
        family = [base]
        tries = 0
        while len(family) < min(cfg.family_size, remaining) and tries < 100:
            tries += 1
            var = _variant(base, rng)
            if _key(var) not in seen:
                seen.add(_key(var))
                family.append(var)
        families.append(family)
        remaining -= len(family)
    return families


def _assign_splits(n_families: int, cfg: SynthPEDESConfig, rng: random.Random) -> list[str]:
    total = sum(cfg.split_fractions)
    _, f_val, f_test = (f / total for f in cfg.split_fractions)
    n_test = max(1, round(f_test * n_families)) if f_test > 0 else 0
    n_val = max(1, round(f_val * n_families)) if f_val > 0 else 0
    if n_families - n_test - n_val < 1:
        raise ValueError(
            f"write_synthpedes: {cfg.num_identities} identities make {n_families} families of "
            f"up to {cfg.family_size}, too few for split_fractions {cfg.split_fractions}; "
            "raise num_identities or lower family_size"
        )
    splits = ["test"] * n_test + ["val"] * n_val
    splits += ["train"] * (n_families - len(splits))
    rng.shuffle(splits)
    return splits


# ---------------------------------------------------------------------------------------------
# Captions


def _word(table: Mapping[str, Sequence[str]], value: str, rng: random.Random) -> str:
    return rng.choice(table.get(value, (value,)))


def _a(phrase: str) -> str:
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def _join(parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def _visible_attributes(ident: Identity, view: str) -> list[str]:
    """Attributes of ``ident`` a caption may mention for an image seen from ``view``."""
    return [
        attr
        for attr, value in ident.items()
        if value != "none" and view in _VISIBLE_FROM.get(attr, _VIEWS)
    ]


def _predicates(ident: Identity, view: str, rng: random.Random) -> list[str]:
    """Verb phrases (third person) for a random subset of the visible attributes."""
    colour = _COLOUR_WORDS
    visible = set(_visible_attributes(ident, view))
    preds: list[str] = []
    if rng.random() < 0.8:
        parts = [
            _word(_HAIR_LENGTH_WORDS, ident["hair_length"], rng) if rng.random() < 0.8 else "",
            _word(colour, ident["hair_colour"], rng) if rng.random() < 0.8 else "",
        ]
        words = " ".join(p for p in parts if p)
        if words:
            preds.append(f"has {words} hair")
    if rng.random() < 0.95:
        upper = _word(_UPPER_WORDS, ident["upper_type"], rng)
        col = _word(colour, ident["upper_colour"], rng)
        pat = ident["upper_pattern"]
        mention_pattern = rng.random() < (0.3 if pat == "plain" else 0.8)
        style = rng.random()
        if mention_pattern and style < 0.5:
            phrase = _a(f"{col} {_word(_PATTERN_WORDS, pat, rng)} {upper}")
        elif mention_pattern and pat != "plain":
            phrase = _a(f"{col} {upper}{_PATTERN_SUFFIX[pat]}")
        elif style < 0.8:
            phrase = _a(f"{col} {upper}")
        else:
            phrase = f"{_a(upper)} in {col}"
        preds.append(rng.choice(("is wearing ", "wears ", "is dressed in ")) + phrase)
    if rng.random() < 0.85:
        lower = _word(_LOWER_WORDS, ident["lower_type"], rng)
        col = _word(colour, ident["lower_colour"], rng)
        if ident["lower_type"] == "skirt":
            phrase = _a(f"{col} {lower}")
        else:
            phrase = rng.choice((f"{col} {lower}", f"a pair of {col} {lower}"))
        preds.append(rng.choice(("is wearing ", "wears ", "has on ")) + phrase)
    if rng.random() < 0.75:
        col = _word(colour, ident["shoes_colour"], rng)
        shoes = rng.choice(("shoes", "sneakers"))
        preds.append(rng.choice((f"is wearing {col} {shoes}", f"has {col} {shoes} on")))
    for acc in _COLOURED_ACCESSORIES:
        if acc in visible and rng.random() < 0.85:
            item = f"{_word(colour, ident[acc], rng)} {_word(_ACC_WORDS, acc, rng)}"
            verb = {
                "bag": ("is carrying ", "has "),
                "backpack": ("is carrying ", "has "),
                "hat": ("is wearing ", "has on "),
                "umbrella": ("is holding ", "is carrying "),
            }[acc]
            preds.append(rng.choice(verb) + _a(item))
    if "glasses" in visible and rng.random() < 0.85:
        preds.append(rng.choice(("is wearing glasses", "has glasses on", "wears spectacles")))
    return preds


def _make_caption(ident: Identity, view: str, rng: random.Random) -> str:
    """One caption of ``ident`` seen from ``view``, drawn from the grammar with ``rng``."""
    noun = _word(_NOUNS, ident["gender"], rng)
    pron = "He" if ident["gender"] == "male" else "She"
    preds = _predicates(ident, view, rng)
    rng.shuffle(preds)
    adj = _word(_BUILD_WORDS, ident["build"], rng) + " " if rng.random() < 0.5 else ""
    subject = rng.choice(("A", "The", "This")) + f" {adj}{noun}"
    sentences: list[str] = []
    i = 0
    while i < len(preds) or not sentences:
        n = rng.randint(1, 3)
        group = preds[i : i + n] or ["is walking"]
        who = subject if not sentences else rng.choice((pron, f"The {noun}"))
        sentences.append(f"{who} {_join(group)}.")
        i += n
    if rng.random() < 0.3:
        sentences.append(rng.choice(_VIEW_SENTENCES[view]).format(S=pron))
    text = " ".join(sentences)
    return text[0].upper() + text[1:]


def _tokens(caption: str) -> list[str]:
    return re.findall(r"[a-z]+(?:-[a-z]+)*", caption.lower())


# ---------------------------------------------------------------------------------------------
# Rendering


def _shade(rgb: _RGB, factor: float) -> _RGB:
    return (
        min(255, int(rgb[0] * factor)),
        min(255, int(rgb[1] * factor)),
        min(255, int(rgb[2] * factor)),
    )


def _muted(rng: random.Random, lo: int, hi: int) -> _RGB:
    v = rng.randint(lo, hi)
    return (v + rng.randint(-14, 14), v + rng.randint(-14, 14), v + rng.randint(-14, 14))


def _limb(draw: Any, x0: float, y0: float, x1: float, y1: float, w: float, fill: _RGB) -> None:
    dx, dy = x1 - x0, y1 - y0
    norm = max((dx * dx + dy * dy) ** 0.5, 1e-6)
    ox, oy = -dy / norm * w / 2, dx / norm * w / 2
    draw.polygon(
        [(x0 + ox, y0 + oy), (x1 + ox, y1 + oy), (x1 - ox, y1 - oy), (x0 - ox, y0 - oy)],
        fill=fill,
    )


def _render(
    ident: Identity, skin: _RGB, view: str, rng: random.Random, cfg: SynthPEDESConfig
) -> Any:
    """Draw one image of ``ident`` (supersampled x2, then reduced) and return a PIL image."""
    import numpy as np
    from PIL import Image, ImageChops, ImageDraw, ImageFilter

    ss = 2
    height, width = cfg.image_size
    w2, h2 = width * ss, height * ss
    bg = _muted(rng, 80, 200)
    canvas = Image.new("RGB", (w2, h2), bg)
    draw = ImageDraw.Draw(canvas)
    floor_y = h2 * rng.uniform(0.75, 0.9)
    draw.rectangle([0, floor_y, w2, h2], fill=_shade(bg, 0.8))
    for _ in range(rng.randint(2, 6)):
        rx, ry = rng.uniform(0, w2), rng.uniform(0, h2)
        bw, bh = rng.uniform(4, w2 / 2), rng.uniform(4, h2 / 3)
        draw.rectangle([rx, ry, rx + bw, ry + bh], fill=_muted(rng, 60, 210))

    umbrella = ident["umbrella"] != "none"
    scale = rng.uniform(0.72, 0.8) if umbrella else rng.uniform(0.82, 0.95)
    u = h2 * scale / 100.0
    top = (h2 - 100 * u) * rng.uniform(0.6, 1.0) if umbrella else (h2 - 100 * u) * rng.random()
    cx = w2 / 2 + rng.uniform(-0.08, 0.08) * w2

    def y(v: float) -> float:
        return top + v * u

    side = view == "side"
    facing = rng.choice((-1, 1))  # side view: +1 faces right
    build = {"thin": 9.5, "average": 12.0, "heavy": 15.0}[ident["build"]]
    female = ident["gender"] == "female"
    sw = (build - (1.0 if female else 0.0)) * u
    hw = (build - (0.5 if female else 2.0)) * u
    if side:
        sw, hw = sw * 0.6, hw * 0.6
    limb_w = {"thin": 6.0, "average": 7.0, "heavy": 8.5}[ident["build"]] * u
    upper = _PALETTE[ident["upper_colour"]]
    lower = _PALETTE[ident["lower_colour"]]
    hair = _PALETTE[ident["hair_colour"]]
    arm_a = rng.uniform(0.05, 0.3)
    leg_a = rng.uniform(0.03, 0.22)

    # Legs, lower garment and shoes.
    lower_type = ident["lower_type"]
    if side:
        hips = [(cx, -leg_a), (cx, leg_a)]
    else:
        hips = [(cx - hw / 2, -leg_a * 0.5), (cx + hw / 2, leg_a * 0.5)]
    cover = {"trousers": 1.0, "shorts": 0.38, "skirt": 0.0}[lower_type]
    for hx, ang in hips:
        fx, fy = hx + 42 * u * ang, y(94)
        _limb(draw, hx, y(52), fx, fy, limb_w, skin)
        if cover:
            kx = hx + (fx - hx) * cover
            ky = y(52) + (fy - y(52)) * cover
            _limb(draw, hx, y(52), kx, ky, limb_w, lower)
        shoe_dx = facing * 2.5 * u if side else 0.0
        draw.ellipse(
            [fx + shoe_dx - 4.5 * u, y(93), fx + shoe_dx + 4.5 * u, y(99)],
            fill=_PALETTE[ident["shoes_colour"]],
        )
    if lower_type == "skirt":
        draw.polygon(
            [
                (cx - hw, y(50)),
                (cx + hw, y(50)),
                (cx + hw + 4 * u, y(72)),
                (cx - hw - 4 * u, y(72)),
            ],
            fill=lower,
        )
    else:
        draw.rectangle([cx - hw, y(50), cx + hw, y(58)], fill=lower)

    # Far arm (side view) and the torso with its pattern.
    shoulder_y, hand_len = y(19), 33 * u
    if side:
        _limb(
            draw,
            cx,
            shoulder_y,
            cx - facing * hand_len * arm_a,
            shoulder_y + hand_len,
            limb_w * 0.9,
            _shade(upper, 0.75),
        )
    bottom = 64.0 if ident["upper_type"] == "coat" else 53.0
    bw = hw + (1.5 * u if ident["upper_type"] == "coat" else 0.0)
    torso = [(cx - sw, y(17)), (cx + sw, y(17)), (cx + bw, y(bottom)), (cx - bw, y(bottom))]
    draw.polygon(torso, fill=upper)
    pattern = ident["upper_pattern"]
    if pattern != "plain":
        dark = sum(upper) < 330
        ink: _RGB = (245, 245, 245) if dark else (20, 20, 20)
        mask = Image.new("L", (w2, h2), 0)
        ImageDraw.Draw(mask).polygon(torso, fill=255)
        stripes = Image.new("L", (w2, h2), 0)
        sd = ImageDraw.Draw(stripes)
        period = 6.5 * u
        band = (2.6 if pattern == "striped" else 1.4) * u
        v = y(19)
        while v < y(bottom):
            sd.rectangle([0, v, w2, v + band], fill=255)
            v += period
        if pattern == "checked":
            x = cx - sw + 2 * u
            while x < cx + sw:
                sd.rectangle([x, 0, x + band, h2], fill=255)
                x += period
        canvas.paste(ink, mask=ImageChops.multiply(mask, stripes))

    backpack = ident["backpack"]
    if backpack != "none":
        colour = _PALETTE[backpack]
        if view == "back":
            draw.rounded_rectangle(
                [cx - 0.72 * sw, y(21), cx + 0.72 * sw, y(46)], radius=3 * u, fill=colour
            )
        elif side:
            back = cx - facing * sw
            draw.rounded_rectangle(
                [min(back, back - facing * 7 * u), y(21), max(back, back - facing * 7 * u), y(45)],
                radius=2 * u,
                fill=colour,
            )
        else:
            for strap in (-1.0, 1.0):
                _limb(
                    draw,
                    cx + strap * 0.6 * sw,
                    y(17),
                    cx + strap * 0.55 * sw,
                    y(36),
                    1.8 * u,
                    colour,
                )

    # Near arm(s) with sleeves and hands.
    sleeve = 1.0 if ident["upper_type"] != "t-shirt" else 0.35
    if side:
        arms = [(cx, facing * arm_a)]
    else:
        arms = [(cx - sw + limb_w / 2, -arm_a), (cx + sw - limb_w / 2, arm_a)]
    for sx, ang in arms:
        hx, hy = sx + hand_len * ang, shoulder_y + hand_len
        _limb(draw, sx, shoulder_y, hx, hy, limb_w * 0.9, skin)
        _limb(
            draw,
            sx,
            shoulder_y - u,
            sx + (hx - sx) * sleeve,
            shoulder_y + (hy - shoulder_y) * sleeve,
            limb_w,
            upper,
        )
        draw.ellipse([hx - 2.6 * u, hy - 2.6 * u, hx + 2.6 * u, hy + 2.6 * u], fill=skin)

    bag = ident["bag"]
    if bag != "none":
        bag_side = facing if side else rng.choice((-1, 1))
        bx = cx + bag_side * (hw * 0.3 if side else hw + 1.5 * u)
        if not side:
            _limb(draw, cx - bag_side * sw * 0.8, y(18), bx, y(47), 1.5 * u, _PALETTE[bag])
        draw.rectangle([bx - 4 * u, y(45), bx + 4 * u, y(55)], fill=_PALETTE[bag])

    # Neck, head, hair, face, glasses and hat.
    draw.rectangle([cx - 2.5 * u, y(12), cx + 2.5 * u, y(18)], fill=skin)
    head = [cx - 5.5 * u, y(1), cx + 5.5 * u, y(15)]
    long_hair = ident["hair_length"] == "long"
    if long_hair and view != "back":
        hx0 = cx - 7 * u if not side else (cx - facing * 7.5 * u)
        draw.rectangle(
            [min(hx0, cx), y(4), max(hx0, cx) + (0 if side else 7 * u), y(27)], fill=hair
        )
    if view == "back":
        draw.ellipse([head[0] - u, head[1] - u, head[2] + u, head[3]], fill=hair)
        if long_hair:
            draw.rectangle([cx - 7 * u, y(6), cx + 7 * u, y(30)], fill=hair)
    else:
        draw.ellipse([head[0] - u, head[1] - u, head[2] + u, head[3] - 3 * u], fill=hair)
        if side:
            fx0 = cx - 3 * u if facing > 0 else cx - 6 * u
            draw.ellipse([fx0, y(4), fx0 + 9 * u, y(15)], fill=skin)
            draw.ellipse(
                [cx + facing * 3 * u - 0.8 * u, y(7.5), cx + facing * 3 * u + 0.8 * u, y(9.1)],
                fill=(30, 30, 30),
            )
        else:
            draw.ellipse([cx - 4.6 * u, y(4), cx + 4.6 * u, y(15)], fill=skin)
            for ex in (-2.1, 2.1):
                draw.ellipse(
                    [cx + (ex - 0.8) * u, y(7.6), cx + (ex + 0.8) * u, y(9.2)], fill=(30, 30, 30)
                )
            if ident["glasses"] != "none":
                for ex in (-2.3, 2.3):
                    draw.rectangle(
                        [cx + (ex - 1.9) * u, y(6.9), cx + (ex + 1.9) * u, y(9.9)],
                        fill=(15, 15, 15),
                    )
                draw.rectangle([cx - 0.6 * u, y(7.4), cx + 0.6 * u, y(8.2)], fill=(15, 15, 15))
    hat = ident["hat"]
    if hat != "none":
        draw.pieslice([cx - 6.5 * u, y(-1.5), cx + 6.5 * u, y(10)], 180, 360, fill=_PALETTE[hat])
        brim = (cx - 7 * u, cx + 7 * u) if not side else sorted((cx, cx + facing * 10 * u))
        draw.rectangle([brim[0], y(3.6), brim[1], y(5.2)], fill=_shade(_PALETTE[hat], 0.85))
    if umbrella:
        ux = cx + rng.choice((-1, 1)) * 4 * u
        colour = _PALETTE[ident["umbrella"]]
        draw.line([ux, y(-6), ux, y(30)], fill=(40, 40, 40), width=max(1, round(1.2 * u)))
        draw.pieslice([ux - 17 * u, y(-20), ux + 17 * u, y(6)], 180, 360, fill=colour)

    if rng.random() < cfg.occlusion_prob:
        px = cx + rng.choice((-1, 1)) * (sw + rng.uniform(1, 5) * u)
        pw = rng.uniform(3.5, 6) * u
        draw.rectangle([px - pw / 2, 0, px + pw / 2, h2], fill=_muted(rng, 50, 120))

    small = canvas.reduce(ss)
    gain = rng.uniform(0.78, 1.2)
    cast = [gain * rng.uniform(0.95, 1.05) for _ in range(3)]
    arr = np.asarray(small, dtype=np.float32) * np.asarray(cast, dtype=np.float32)
    small = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")
    if rng.random() < cfg.blur_prob:
        small = small.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 0.8)))
    return small


# ---------------------------------------------------------------------------------------------
# Writer


def write_synthpedes(
    root: str | os.PathLike[str],
    config: SynthPEDESConfig | None = None,
    *,
    overwrite: bool = False,
    **overrides: Any,
) -> Path:
    """Generate SynthPEDES into ``root/CUHK-PEDES`` (CUHK-PEDES format).

    Args:
        root: output folder; read it back with ``build_dataset("synthpedes", root)``.
        config: the settings; ``None`` uses :class:`SynthPEDESConfig` defaults.
        overwrite: replace an existing SynthPEDES in ``root`` (its ``imgs/synth`` folder is
            deleted first); otherwise an existing ``reid_raw.json`` raises.
        **overrides: fields of :class:`SynthPEDESConfig` to change, e.g.
            ``write_synthpedes(root, num_identities=60, image_size=(64, 32), seed=1)``.

    Returns:
        The dataset folder ``root/CUHK-PEDES``.

    Raises:
        TypeError: an unknown override name.
        ValueError: invalid settings (see :class:`SynthPEDESConfig`), or too few identities
            for the split fractions.
        FileExistsError: ``root/CUHK-PEDES/reid_raw.json`` exists and ``overwrite`` is False.

    Example:
        >>> folder = write_synthpedes("synth", num_identities=30, images_per_identity=2)
        ... # doctest: +SKIP
    """
    fields = {f.name for f in dataclasses.fields(SynthPEDESConfig)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise TypeError(
            f"write_synthpedes: unknown setting(s) {unknown}; SynthPEDESConfig fields are "
            f"{sorted(fields)}"
        )
    cfg = dataclasses.replace(config or SynthPEDESConfig(), **overrides)
    folder = Path(root) / "CUHK-PEDES"
    anno_path = folder / "reid_raw.json"
    if anno_path.exists() and not overwrite:
        raise FileExistsError(
            f"write_synthpedes: {anno_path} already exists; pass overwrite=True to replace it"
        )
    rng = random.Random(f"synthpedes:{cfg.seed}:identities")
    families = _make_identities(cfg, rng)
    splits = _assign_splits(len(families), cfg, rng)
    order = {"train": 0, "val": 1, "test": 2}
    ranked = sorted(range(len(families)), key=lambda f: order[splits[f]])

    img_dir = folder / "imgs" / "synth"
    if overwrite and img_dir.exists():
        shutil.rmtree(img_dir)
    img_dir.mkdir(parents=True, exist_ok=True)
    entries: list[dict[str, Any]] = []
    records: list[dict[str, Any]] = []
    pid = 0
    for fam in ranked:
        for ident in families[fam]:
            pid += 1
            skin = rng.randrange(len(_SKIN))
            images = []
            for k in range(cfg.images_per_identity):
                img_rng = random.Random(f"synthpedes:{cfg.seed}:{pid}:{k}")
                view = "front" if k == 0 else img_rng.choices(_VIEWS, weights=(0.4, 0.35, 0.25))[0]
                image = _render(ident, _SKIN[skin], view, img_rng, cfg)
                rel = f"synth/{pid:05d}_{k:02d}.png"
                image.save(folder / "imgs" / rel, format="PNG")
                captions = [
                    _make_caption(ident, view, img_rng) for _ in range(cfg.captions_per_image)
                ]
                entries.append(
                    {
                        "split": splits[fam],
                        "captions": captions,
                        "file_path": rel,
                        "processed_tokens": [_tokens(c) for c in captions],
                        "id": pid,
                    }
                )
                images.append({"file_path": rel, "viewpoint": view})
            records.append(
                {
                    "id": pid,
                    "split": splits[fam],
                    "family": fam,
                    "skin_tone": skin,
                    "attributes": ident,
                    "images": images,
                }
            )
    anno_path.write_text(json.dumps(entries), encoding="utf-8")
    meta = {
        "format_version": SYNTHPEDES_FORMAT_VERSION,
        "config": dataclasses.asdict(cfg),
        "identities": records,
    }
    (folder / "synthpedes.json").write_text(json.dumps(meta, indent=1), encoding="utf-8")
    return folder
