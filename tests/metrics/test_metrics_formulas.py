"""The metrics' arithmetic against independent computations written here (numpy/scipy)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from styleforge.errors import StyleforgeError
from styleforge.metrics import (
    InceptionScore, MeanCov, filtered_mean, frechet_distance, kernel_inception_distance, precision_recall,
)


def _stats(x):
    return x.mean(axis=0), np.cov(x, rowvar=False, bias=True)


def _fid_by_eigenvalues(x, y):
    """FID with Tr sqrt(S1 S2) as the sum of the square roots of the eigenvalues of S1 S2 (real, >= 0)."""
    m1, s1 = _stats(x)
    m2, s2 = _stats(y)
    ev = np.linalg.eigvals(s1 @ s2).real.clip(min=0)
    return float(((m1 - m2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.sqrt(ev).sum())


def test_streaming_stats_equal_batch_stats():
    rng = np.random.RandomState(0)
    x = rng.standard_normal([1000, 12]) * 3 + 5
    acc = MeanCov()
    for chunk in np.array_split(x, [1, 37, 38, 500]):
        acc.update(torch.from_numpy(chunk.astype(np.float32)))
    x32 = x.astype(np.float32).astype(np.float64)
    mu, cov = _stats(x32)
    assert acc.count == 1000
    np.testing.assert_allclose(acc.mean(), mu, rtol=0, atol=1e-10)
    np.testing.assert_allclose(acc.cov(), cov, rtol=0, atol=1e-10)


def test_frechet_distance_matches_eigenvalue_formula():
    rng = np.random.RandomState(1)
    x = rng.standard_normal([400, 8])
    y = rng.standard_normal([300, 8]) @ rng.standard_normal([8, 8]) * 0.5 + 0.3
    got = frechet_distance(*_stats(y), *_stats(x))
    assert got == pytest.approx(_fid_by_eigenvalues(y, x), rel=1e-8)


def test_fid_of_a_set_with_itself_is_zero_and_grows_with_a_shift():
    rng = np.random.RandomState(2)
    x = rng.standard_normal([500, 6])
    assert abs(frechet_distance(*_stats(x), *_stats(x))) < 1e-9
    values = [frechet_distance(*_stats(x + s), *_stats(x)) for s in (0.1, 0.2, 0.5, 1.0)]
    assert all(a < b for a, b in zip(values, values[1:]))
    assert values[-1] == pytest.approx(6 * 1.0 ** 2, rel=1e-6)  # a pure shift adds |shift|^2


def test_fid_is_finite_when_sqrtm_has_an_imaginary_part():
    import scipy.linalg

    rng = np.random.RandomState(3)
    x, y = rng.standard_normal([5, 16]), rng.standard_normal([6, 16])  # fewer samples than dims: singular
    s = scipy.linalg.sqrtm(_stats(x)[1] @ _stats(y)[1])
    assert np.iscomplexobj(s) or not np.isfinite(s).all()  # the case that crashes other tools
    got = frechet_distance(*_stats(x), *_stats(y))
    assert np.isfinite(got)
    assert got == pytest.approx(_fid_by_eigenvalues(x, y), rel=1e-3)


def _mmd2_unbiased(x, y):
    d = x.shape[1]
    kxx = (x @ x.T / d + 1) ** 3
    kyy = (y @ y.T / d + 1) ** 3
    kxy = (x @ y.T / d + 1) ** 3
    m = x.shape[0]
    off = ~np.eye(m, dtype=bool)
    return kxx[off].mean() + kyy[off].mean() - 2 * kxy.mean()


def test_kid_matches_the_unbiased_mmd_when_subsets_are_the_whole_sets():
    rng = np.random.RandomState(4)
    real = rng.standard_normal([50, 10]).astype(np.float32)
    gen = (rng.standard_normal([50, 10]) * 1.3 + 1.0).astype(np.float32)
    got = kernel_inception_distance(real, gen, num_subsets=7, max_subset_size=1000)
    assert got == pytest.approx(_mmd2_unbiased(gen.astype(np.float64), real.astype(np.float64)), rel=1e-9)
    other = rng.standard_normal([50, 10]).astype(np.float32)  # same distribution as real: near zero
    same = kernel_inception_distance(real, other, num_subsets=3)
    assert same == pytest.approx(_mmd2_unbiased(other.astype(np.float64), real.astype(np.float64)), rel=1e-9)
    assert abs(same) < got / 3


def test_kid_subsets_are_seeded_and_need_two_images():
    rng = np.random.RandomState(5)
    real, gen = rng.standard_normal([300, 4]), rng.standard_normal([200, 4]) + 0.5
    a = kernel_inception_distance(real, gen, 5, 50, np.random.RandomState(9))
    b = kernel_inception_distance(real, gen, 5, 50, np.random.RandomState(9))
    c = kernel_inception_distance(real, gen, 5, 50, np.random.RandomState(10))
    assert a == b and a != c
    with pytest.raises(StyleforgeError, match="at least 2"):
        kernel_inception_distance(real[:1], gen)


def _is_by_hand(p, splits):
    n = p.shape[0]
    scores = []
    for i in range(splits):
        part = p[i * n // splits: (i + 1) * n // splits]
        py = part.mean(axis=0, keepdims=True)
        kl = (part * (np.log(part) - np.log(py))).sum(axis=1).mean()
        scores.append(np.exp(kl))
    return np.mean(scores), np.std(scores)


@pytest.mark.parametrize("as_logits", [True, False])
def test_inception_score_streamed_equals_hand_value(as_logits):
    rng = np.random.RandomState(6)
    logits = rng.standard_normal([103, 7]) * 2
    p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    acc = InceptionScore(103, num_splits=10)
    out = logits if as_logits else p
    for chunk in np.array_split(out, [5, 6, 50, 77]):  # batch bounds that cut across the splits
        acc.update(torch.from_numpy(chunk))
    mean, std = acc.result()
    want_mean, want_std = _is_by_hand(p, 10)
    assert mean == pytest.approx(want_mean, rel=1e-10)
    assert std == pytest.approx(want_std, rel=1e-8)
    with pytest.raises(StyleforgeError, match="at least 10"):
        InceptionScore(9, 10)


def _pr_by_hand(real, gen, k):
    def radii(a):
        d = np.sqrt(((a[:, None, :] - a[None, :, :]) ** 2).sum(-1))
        return np.sort(d, axis=1)[:, k]

    def covered(probes, manifold, r):
        d = np.sqrt(((probes[:, None, :] - manifold[None, :, :]) ** 2).sum(-1))
        return (d <= r[None, :]).any(axis=1).mean()

    return covered(gen, real, radii(real)), covered(real, gen, radii(gen))


def test_precision_recall_in_small_blocks_matches_brute_force():
    rng = np.random.RandomState(7)
    real = rng.standard_normal([40, 5]).astype(np.float16)
    gen = (rng.standard_normal([33, 5]) * 1.5 + 0.7).astype(np.float16)
    got = precision_recall(real, gen, nhood_size=3, row_batch_size=7, col_batch_size=5)
    want = _pr_by_hand(real.astype(np.float64), gen.astype(np.float64), 3)
    # (distances are rounded to fp16 as the official code does; at this scale no sample sits on a radius)
    assert got == pytest.approx(want, abs=1 / 33)
    assert 0 < got[0] < 1 and 0 < got[1] < 1


def test_precision_recall_identical_and_disjoint_sets():
    rng = np.random.RandomState(8)
    x = rng.standard_normal([30, 6]).astype(np.float16)
    assert precision_recall(x, x.copy(), row_batch_size=4, col_batch_size=9) == (1.0, 1.0)
    far = (x + 100).astype(np.float16)
    assert precision_recall(x, far) == (0.0, 0.0)
    with pytest.raises(StyleforgeError, match="at least 4"):
        precision_recall(x[:3], x)


def test_filtered_mean_keeps_the_1_to_99_percentiles():
    d = np.arange(1000, dtype=np.float64)
    d[0], d[-1] = -1e9, 1e9  # outliers are dropped
    lo, hi = np.sort(d)[9], np.sort(d)[990]  # 'lower' 1st and 'higher' 99th percentile of 1000 samples
    want = d[(d >= lo) & (d <= hi)].mean()
    assert filtered_mean(d) == pytest.approx(want)
    assert filtered_mean(d) == pytest.approx(np.arange(9, 991).mean())
