"""Embedding heads: probabilistic (Gaussian) embeddings and their distances."""

from __future__ import annotations

from textreid.heads.gaussian import GaussianEmbedding, GaussianHead
from textreid.heads.gaussian_distances import (
    GAUSSIAN_DISTANCES,
    GaussianScores,
    bhattacharyya_distance,
    csd_distance,
    gaussian_distance,
    gaussian_scores,
    kl_divergence,
    log_expected_likelihood,
    match_probability,
    sample_match_logits,
    symmetric_kl_divergence,
    wasserstein2_distance,
)
from textreid.heads.token_similarity import (
    SparseTokenSimilarity,
    blockwise_pairs,
    maxsim_logsumexp,
    sparse_aggregate,
)

__all__ = [
    "GAUSSIAN_DISTANCES",
    "GaussianEmbedding",
    "GaussianHead",
    "GaussianScores",
    "SparseTokenSimilarity",
    "bhattacharyya_distance",
    "blockwise_pairs",
    "csd_distance",
    "gaussian_distance",
    "gaussian_scores",
    "kl_divergence",
    "log_expected_likelihood",
    "match_probability",
    "maxsim_logsumexp",
    "sample_match_logits",
    "sparse_aggregate",
    "symmetric_kl_divergence",
    "wasserstein2_distance",
]
