"""PCME, PCME++ (CSD), distribution/point contrast and KL losses on Gaussian embeddings.

Reference numbers: naver-ai/pcme ``criterions/probemb.py`` (MCSoftContrastiveLoss) and
naver-ai/pcmepp ``pcmepp/criterions/pcmepp.py`` (ClosedFormSampledDistanceLoss) run in float64
on the inputs of ``_case``; gradients are stored as projections ``Σ grad ⊙ w`` on fixed
random ``w``. PCME samples are ``μ + ε ⊙ exp(logsigma)`` (the reference's sampling).
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from textreid.heads import GaussianEmbedding, csd_distance
from textreid.losses import (
    CSDLoss,
    DistributionContrastLoss,
    GaussianKLLoss,
    PCMELoss,
    PointContrastLoss,
)
from textreid.losses._common import DirectionalLosses
from textreid.losses.csd import pseudo_positive_match
from textreid.losses.functional import (
    csd_loss,
    distribution_contrast_loss,
    gaussian_kl_loss,
    pcme_loss,
    point_contrast_loss,
)

Leaves = list[torch.Tensor]


def _case(seed: int, b: int, d: int, lv_center: float) -> tuple[Leaves, Leaves, torch.Generator]:
    g = torch.Generator().manual_seed(seed)
    dt = torch.float64
    mu_v = F.normalize(torch.randn(b, d, generator=g, dtype=dt), dim=-1)
    mu_t = F.normalize(torch.randn(b, d, generator=g, dtype=dt), dim=-1)
    lv_v = torch.randn(b, d, generator=g, dtype=dt) * 0.5 + lv_center
    lv_t = torch.randn(b, d, generator=g, dtype=dt) * 0.5 + lv_center
    w = [torch.randn(b, d, generator=g, dtype=dt) for _ in range(4)]
    return [t.clone().requires_grad_() for t in (mu_v, mu_t, lv_v, lv_t)], w, g


def _proj(leaves: Leaves, w: Leaves) -> list[float]:
    return [float((leaf.grad * wi).sum()) for leaf, wi in zip(leaves, w)]  # type: ignore[operator]


REF_PCME = {
    # name: (seed, B, K, D, log-var centre, a, b, beta, lambda) -> (loss, grad projections)
    (0, 4, 3, 5, -2.0, 5.0, 5.0, 1e-3, 10.0): (
        -0.6349080565324665,
        [-39.30933352942413, 10.978575474121659, -1.9492164287559814, 0.9701748280530069],
    ),
    (1, 64, 7, 512, -4.0, 15.0, 15.0, 1e-5, 0.0): (
        2259.016248762291,
        [760.7952859258153, -560.3560048013493, 8.69147757473937, -5.501242962092455],
    ),
}


@pytest.mark.parametrize("key", list(REF_PCME), ids=["tiny", "B64_D512"])
def test_pcme_equals_reference(
    key: tuple[int, int, int, int, float, float, float, float, float],
) -> None:
    seed, b, k, d, c, a, s, beta, lam = key
    ref_loss, ref_grads = REF_PCME[key]
    leaves, w, g = _case(seed, b, d, c)
    mu_v, mu_t, lv_v, lv_t = leaves
    loss = pcme_loss(
        GaussianEmbedding(mu_v, lv_v), GaussianEmbedding(mu_t, lv_t), generator=g,
        num_samples=k, negative_scale=a, shift=s, kl_beta=beta, uniformity_lambda=lam,
        kl_on_sample_mean=True, reference_sampling=True,
    )  # fmt: skip
    assert isinstance(loss, torch.Tensor)
    loss.backward()
    assert float(loss.detach()) == pytest.approx(ref_loss, rel=1e-5, abs=1e-5)
    assert _proj(leaves, w) == pytest.approx(ref_grads, rel=1e-5, abs=1e-5)


def test_pcme_module_explicit_samples_and_quirk_options() -> None:
    leaves, _, g = _case(0, 4, 5, -2.0)
    img = GaussianEmbedding(leaves[0], leaves[2])
    txt = GaussianEmbedding(leaves[1], leaves[3])
    zv, zt = img.sample(3, g), txt.sample(3, g)
    crit = PCMELoss(5.0, 5.0, kl_beta=1e-3).double()
    base = crit(img, txt, image_samples=zv, text_samples=zt)
    assert isinstance(base, torch.Tensor)
    # KL on the sample mean only differs through the means
    quirk = PCMELoss(5.0, 5.0, kl_beta=1e-3, kl_on_sample_mean=True).double()
    assert float(quirk(img, txt, image_samples=zv, text_samples=zt).detach()) != pytest.approx(
        float(base.detach())
    )
    base.backward()
    assert crit.negative_scale.grad is not None
    assert crit.shift.grad is not None


def test_pcme_hand_value_one_pair() -> None:
    # B=1, K=1: NLL = -log sigmoid(2 (-a sqrt(d² + 1e-6) + b)), counted in both directions
    img = GaussianEmbedding(torch.tensor([[0.0, 0.0]]), torch.zeros(1, 2))
    txt = GaussianEmbedding(torch.tensor([[3.0, 4.0]]), torch.zeros(1, 2))
    zv, zt = img.mean[:, None], txt.mean[:, None]
    loss = pcme_loss(
        img, txt, negative_scale=1.0, shift=4.0, image_samples=zv, text_samples=zt, kl_beta=0.0
    )
    s = -math.sqrt(25 + 1e-6) + 4.0
    assert float(loss) == pytest.approx(-2 * math.log(1 / (1 + math.exp(-2 * s))), rel=1e-6)


def test_pcme_identity_aware_and_reductions() -> None:
    leaves, _, g = _case(3, 4, 6, -3.0)
    img = GaussianEmbedding(leaves[0].detach(), leaves[2].detach())
    txt = GaussianEmbedding(leaves[1].detach(), leaves[3].detach())
    zv, zt = img.sample(2, g), txt.sample(2, g)
    pids = torch.tensor([0, 0, 1, 2])
    kw = {"image_samples": zv, "text_samples": zt, "kl_beta": 1e-2}
    rows = pcme_loss(img, txt, pids, reduction="none", **kw)  # type: ignore[arg-type]
    assert isinstance(rows, DirectionalLosses)
    total = pcme_loss(img, txt, pids, **kw)  # type: ignore[arg-type]
    torch.testing.assert_close(rows.image_to_text.sum() + rows.text_to_image.sum(), total)
    mean = pcme_loss(img, txt, pids, reduction="mean", **kw)  # type: ignore[arg-type]
    torch.testing.assert_close(rows.image_to_text.mean() + rows.text_to_image.mean(), mean)
    inst = pcme_loss(img, txt, reduction="none", **kw)  # type: ignore[arg-type]
    assert isinstance(inst, DirectionalLosses)
    assert not torch.allclose(inst.image_to_text[:2], rows.image_to_text[:2])
    torch.testing.assert_close(inst.image_to_text[2:], rows.image_to_text[2:])


def test_pcme_errors() -> None:
    g = GaussianEmbedding(torch.zeros(2, 3), torch.zeros(2, 3))
    with pytest.raises(ValueError, match="the uniformity term is a batch term"):
        pcme_loss(g, g, uniformity_lambda=1.0, reduction="none")
    with pytest.raises(ValueError, match="PCMELoss: num_samples must be an int >= 1, got 0"):
        PCMELoss(num_samples=0)
    with pytest.raises(
        ValueError, match=r"image_samples has shape \(2, 1, 4\) but the embedding is \(2, 3\)"
    ):
        pcme_loss(g, g, image_samples=torch.zeros(2, 1, 4))
    with pytest.raises(TypeError, match="pcme_loss: text must be a GaussianEmbedding"):
        pcme_loss(g, torch.zeros(2, 3))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="kl_beta must be >= 0"):
        pcme_loss(g, g, kl_beta=-1.0)


REF_PP = {
    # (seed, B, D, log-var centre, pids or None, distance) -> reference values
    (2, 4, 5, -2.0, (0, 0, 1, 2), "csd"): {
        "loss": 11.114473332791686,
        "grads": [8.713656583763658, -4.422247178620145, 0.18246546080301795, -2.276412005168781],
        "pp_i2t": [[1, 1, 1, 0], [1, 1, 0, 1], [0, 0, 1, 0], [1, 1, 1, 1]],
        "pp_t2i": [[1, 1, 0, 0], [1, 1, 0, 1], [0, 0, 1, 0], [1, 1, 1, 1]],
    },
    (3, 4, 5, -2.0, None, "wasserstein"): {
        "loss": 2.11663158385122,
        "grads": [
            -1.8812479139725935,
            0.9311763920556693,
            -0.062390171540424186,
            -0.049953308431574625,
        ],
        "pp_i2t": [[1, 1, 1, 0], [0, 1, 0, 0], [1, 0, 1, 0], [0, 1, 0, 1]],
        "pp_t2i": [[1, 0, 1, 0], [0, 1, 0, 0], [1, 0, 1, 0], [1, 1, 0, 1]],
    },
    (4, 64, 512, -8.0, tuple(i // 4 for i in range(64)), "csd"): {
        "loss": 1.5761282668736696,
        "grads": [
            -0.017582366978625655,
            -0.49197235815997775,
            0.0006982894871849657,
            -0.001963773800466707,
        ],
        "pp_sums": (2140.0, 2161.0),
    },
    (5, 64, 512, -8.0, None, "csd"): {
        "loss": 0.9187789824083951,
        "grads": [
            0.029149624945767158,
            0.16739796235771556,
            -0.000475804011617369,
            -0.0001495754418893323,
        ],
        "pp_sums": (2134.0, 2129.0),
    },
}


@pytest.mark.parametrize(
    "key", list(REF_PP), ids=["tiny_pids", "tiny_wdist", "B64_pids", "B64_eye"]
)
def test_csd_loss_equals_reference(
    key: tuple[int, int, int, float, tuple[int, ...] | None, str],
) -> None:
    seed, b, d, c, pid_list, dist = key
    ref = REF_PP[key]
    leaves, w, _ = _case(seed, b, d, c)
    img = GaussianEmbedding(leaves[0], leaves[2])
    txt = GaussianEmbedding(leaves[1], leaves[3])
    pids = None if pid_list is None else torch.tensor(pid_list)
    crit = CSDLoss(distance=dist).double()
    loss = crit(img, txt, pids)
    assert isinstance(loss, torch.Tensor)
    loss.backward()
    assert float(loss.detach()) == pytest.approx(ref["loss"], rel=1e-5, abs=1e-5)
    assert _proj(leaves, w) == pytest.approx(ref["grads"], rel=1e-5, abs=1e-5)
    with torch.no_grad():
        dist_fn = csd_distance if dist == "csd" else None
        match = torch.eye(b) if pids is None else (pids[:, None] == pids[None]).double()
        if dist_fn is None:
            lg = (
                -5
                * (
                    (img.mean[:, None] - txt.mean[None]).pow(2).sum(-1)
                    + (img.std[:, None] - txt.std[None]).pow(2).sum(-1)
                )
                + 5
            )
        else:
            lg = -5 * dist_fn(img, txt) + 5
        pp1 = pseudo_positive_match(lg, match)
        pp2 = pseudo_positive_match(lg.T, match.T)
    if "pp_i2t" in ref:
        assert pp1.tolist() == ref["pp_i2t"]
        assert pp2.tolist() == ref["pp_t2i"]
    else:
        assert (float(pp1.sum()), float(pp2.sum())) == ref["pp_sums"]


def test_pseudo_positive_hand_case() -> None:
    logits = torch.tensor([[1.0, 3.0, 2.0], [0.0, 5.0, 6.0]])
    match = torch.tensor([[False, False, True], [False, True, False]])
    out = pseudo_positive_match(logits, match)
    torch.testing.assert_close(out, torch.tensor([[0.0, 1.0, 1.0], [0.0, 1.0, 1.0]]))
    no_pos = pseudo_positive_match(logits, torch.zeros(2, 3, dtype=torch.bool))
    torch.testing.assert_close(no_pos, torch.zeros(2, 3))
    with pytest.raises(ValueError, match=r"logits has shape \(2, 3\) but match has \(3, 2\)"):
        pseudo_positive_match(logits, match.T)


def test_csd_reductions_and_errors() -> None:
    leaves, _, _ = _case(6, 4, 5, -2.0)
    img = GaussianEmbedding(leaves[0].detach(), leaves[2].detach())
    txt = GaussianEmbedding(leaves[1].detach(), leaves[3].detach())
    rows = csd_loss(img, txt, reduction="none")
    assert isinstance(rows, DirectionalLosses)
    torch.testing.assert_close(
        rows.image_to_text.mean() + rows.text_to_image.mean(), csd_loss(img, txt)
    )
    torch.testing.assert_close(
        rows.image_to_text.sum() + rows.text_to_image.sum(), csd_loss(img, txt, reduction="sum")
    )
    with pytest.raises(ValueError, match="CSDLoss: distance must be one of"):
        CSDLoss(distance="kl")
    with pytest.raises(ValueError, match="csd_loss: pass either match or pids, not both"):
        csd_loss(img, txt, torch.arange(4), match=torch.eye(4))
    with pytest.raises(ValueError, match=r"match has shape \(3, 3\) but the batch is \(4, 4\)"):
        csd_loss(img, txt, match=torch.eye(3))


def test_csd_zero_variance_is_squared_euclidean() -> None:
    mu = F.normalize(torch.randn(3, 4, dtype=torch.float64), dim=-1)
    mt = F.normalize(torch.randn(3, 4, dtype=torch.float64), dim=-1)
    img = GaussianEmbedding(mu, torch.full_like(mu, -80.0))
    txt = GaussianEmbedding(mt, torch.full_like(mt, -80.0))
    torch.testing.assert_close(csd_distance(img, txt), torch.cdist(mu, mt).pow(2))


def _deterministic_infonce(
    v: torch.Tensor, t: torch.Tensor, pids: torch.Tensor, tau: float
) -> torch.Tensor:
    """Loop reference: -mean over positives of log softmax of cosine/τ, both directions."""
    v, t = F.normalize(v, dim=-1), F.normalize(t, dim=-1)
    total = torch.zeros((), dtype=v.dtype)
    for a, b in ((v, t), (t, v)):
        rows = []
        for i in range(a.shape[0]):
            logits = (a[i] @ b.T) / tau
            logp = logits - torch.logsumexp(logits, 0)
            pos = [j for j in range(b.shape[0]) if pids[i] == pids[j]]
            rows.append(-sum(logp[j] for j in pos) / len(pos))
        total = total + torch.stack(rows).mean()
    return total


def test_point_contrast_zero_variance_equals_infonce_on_means() -> None:
    mu = F.normalize(torch.randn(6, 8, dtype=torch.float64), dim=-1)
    mt = F.normalize(torch.randn(6, 8, dtype=torch.float64), dim=-1)
    pids = torch.tensor([0, 0, 1, 2, 2, 3])
    img = GaussianEmbedding(mu, torch.full_like(mu, -60.0))
    txt = GaussianEmbedding(mt, torch.full_like(mt, -60.0))
    loss = point_contrast_loss(
        img, txt, pids, intra_modal_weight=0.0, num_samples=3, temperature=0.1
    )
    torch.testing.assert_close(loss, _deterministic_infonce(mu, mt, pids, 0.1))
    # the intra-modal term on identical points equals the InfoNCE of a modality with itself
    module = PointContrastLoss(num_samples=1, temperature=0.1, intra_modal_weight=1.0)
    assert float(module(img, txt, pids)) > float(loss)


def test_point_contrast_grad_reaches_log_var_and_is_deterministic() -> None:
    mu = torch.randn(4, 5, requires_grad=True)
    lv = torch.full((4, 5), -1.0, requires_grad=True)
    g1, g2 = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    img = GaussianEmbedding(mu, lv)
    txt = GaussianEmbedding(torch.randn(4, 5), torch.zeros(4, 5))
    a = point_contrast_loss(img, txt, generator=g1)
    b = point_contrast_loss(img, txt, generator=g2)
    torch.testing.assert_close(a, b)
    assert isinstance(a, torch.Tensor)
    a.backward()
    assert lv.grad is not None
    assert float(lv.grad.abs().sum()) > 0


def test_distribution_contrast_zero_variance_and_sdm() -> None:
    mu = F.normalize(torch.randn(5, 6, dtype=torch.float64), dim=-1)
    mt = F.normalize(torch.randn(5, 6, dtype=torch.float64), dim=-1)
    pids = torch.tensor([0, 1, 1, 2, 3])
    img = GaussianEmbedding(mu, torch.full_like(mu, -60.0))
    txt = GaussianEmbedding(mt, torch.full_like(mt, -60.0))
    # -‖Δμ‖²/0.04 = (2cos - 2)/0.04: the constant cancels in the softmax -> cosine/0.02
    loss = distribution_contrast_loss(img, txt, pids)
    torch.testing.assert_close(loss, _deterministic_infonce(mu, mt, pids, 0.02))
    sdm = DistributionContrastLoss(objective="sdm", distance="bhattacharyya")(img, txt, pids)
    assert torch.isfinite(sdm)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="DistributionContrastLoss: objective must be one of"):
        DistributionContrastLoss(objective="triplet")


LOSSES = [
    lambda i, t, p: pcme_loss(
        i,
        t,
        p,
        num_samples=2,
        generator=torch.Generator().manual_seed(0),
        kl_beta=1e-3,
        uniformity_lambda=1.0,
    ),
    lambda i, t, p: csd_loss(i, t, p),
    lambda i, t, p: distribution_contrast_loss(i, t, p, distance="kl"),
    lambda i, t, p: distribution_contrast_loss(i, t, p, distance="csd", objective="sdm"),
    lambda i, t, p: point_contrast_loss(
        i, t, p, num_samples=2, generator=torch.Generator().manual_seed(0)
    ),
    lambda i, t, p: gaussian_kl_loss(i) + gaussian_kl_loss(t),
]
LOSS_IDS = ["pcme", "csd", "dc_kl", "dc_sdm", "point", "kl"]


@pytest.mark.parametrize("fn", LOSSES, ids=LOSS_IDS)
@pytest.mark.parametrize("lv", [-20.0, 10.0])
def test_extreme_log_variances_finite(fn, lv: float) -> None:  # type: ignore[no-untyped-def]
    mu = torch.randn(4, 6, requires_grad=True)
    lvv = torch.full((4, 6), lv, requires_grad=True)
    txt = GaussianEmbedding(torch.randn(4, 6), torch.linspace(-20, 10, 24).reshape(4, 6))
    loss = fn(GaussianEmbedding(mu, lvv), txt, torch.tensor([0, 0, 1, 2]))
    assert bool(torch.isfinite(loss))
    loss.backward()
    assert bool(torch.isfinite(mu.grad).all() and torch.isfinite(lvv.grad).all())


@pytest.mark.parametrize("fn", LOSSES, ids=LOSS_IDS)
def test_gradcheck_float64(fn) -> None:  # type: ignore[no-untyped-def]
    leaves, _, _ = _case(7, 3, 3, -1.0)
    pids = torch.tensor([0, 0, 1])

    def f(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = fn(GaussianEmbedding(a, c), GaussianEmbedding(b, d), pids)
        return out

    assert torch.autograd.gradcheck(f, tuple(leaves))


@given(seed=st.integers(0, 1000), b=st.integers(1, 5))
def test_modules_equal_functional(seed: int, b: int) -> None:
    g = torch.Generator().manual_seed(seed)
    img = GaussianEmbedding(torch.randn(b, 4, generator=g), torch.randn(b, 4, generator=g))
    txt = GaussianEmbedding(torch.randn(b, 4, generator=g), torch.randn(b, 4, generator=g))
    pids = torch.randint(0, 3, (b,), generator=g)
    torch.testing.assert_close(CSDLoss()(img, txt, pids), csd_loss(img, txt, pids))
    torch.testing.assert_close(
        DistributionContrastLoss()(img, txt, pids), distribution_contrast_loss(img, txt, pids)
    )
    torch.testing.assert_close(GaussianKLLoss()(img), gaussian_kl_loss(img))
    for loss in (csd_loss(img, txt, pids), distribution_contrast_loss(img, txt, pids)):
        assert bool(torch.isfinite(loss))  # type: ignore[arg-type]


def test_gaussian_kl_hand_value_and_reductions() -> None:
    g = GaussianEmbedding(torch.tensor([[1.0, 0.0]]), torch.log(torch.tensor([[1.0, 2.0]])))
    expected = torch.tensor([[0.5, 0.5 * (2.0 - 1.0 - math.log(2.0))]])
    torch.testing.assert_close(gaussian_kl_loss(g, reduction="none"), expected)
    torch.testing.assert_close(gaussian_kl_loss(g, reduction="sum"), expected.sum())
    torch.testing.assert_close(GaussianKLLoss()(g), expected.mean())
    with pytest.raises(TypeError, match="gaussian_kl_loss: embedding must be a GaussianEmbedding"):
        gaussian_kl_loss(torch.zeros(1, 2))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="reduction must be one of"):
        GaussianKLLoss(reduction="avg")  # type: ignore[arg-type]


def test_shared_argument_errors() -> None:
    a = GaussianEmbedding(torch.zeros(2, 3), torch.zeros(2, 3))
    with pytest.raises(
        ValueError, match=r"csd_loss: image.mean has width 3 but text.mean has width 4"
    ):
        csd_loss(a, GaussianEmbedding(torch.zeros(2, 4), torch.zeros(2, 4)))
    with pytest.raises(ValueError, match="pids has 3 entries but image_feats has 2 rows"):
        point_contrast_loss(a, a, torch.arange(3))
    bad = GaussianEmbedding(torch.tensor([[float("nan"), 0.0, 0.0]] * 2), torch.zeros(2, 3))
    with pytest.raises(ValueError, match=r"image\.mean contains 2 non-finite values"):
        distribution_contrast_loss(bad, a)
    with pytest.raises(ValueError, match="empty batch"):
        csd_loss(a[0:0], a)
    with pytest.raises(ValueError, match="PointContrastLoss: temperature must be > 0"):
        PointContrastLoss(temperature=0.0)
