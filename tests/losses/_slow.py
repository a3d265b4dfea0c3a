"""Independent slow references: explicit loops over rows in float64, no vectorised helpers."""

from __future__ import annotations

import math

from torch import Tensor


def cos(a: Tensor, b: Tensor) -> float:
    return float(a @ b) / math.sqrt(float(a @ a) * float(b @ b))


def softmax(xs: list[float]) -> list[float]:
    top = max(xs)
    e = [math.exp(x - top) for x in xs]
    return [x / sum(e) for x in e]


def kl_row(logits: list[float], labels: list[bool], norm: str, eps: float) -> float:
    p = softmax(logits)
    n = sum(labels) if norm == "l1" else math.sqrt(sum(labels))
    q = [(1.0 / n if y else 0.0) if n else 0.0 for y in labels]
    return sum(pi * (math.log(pi) - math.log(qi + eps)) for pi, qi in zip(p, q))


def sides(
    v: Tensor, t: Tensor, ip: list[int], tp: list[int]
) -> tuple[list[list[float]], list[list[bool]]]:
    sim = [[cos(v[i], t[j]) for j in range(len(tp))] for i in range(len(ip))]
    match = [[ip[i] == tp[j] for j in range(len(tp))] for i in range(len(ip))]
    return sim, match


def transpose(m: list[list[float]] | list[list[bool]]) -> list[list[float]]:
    return [list(col) for col in zip(*m)]
