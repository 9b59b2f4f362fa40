"""The metrics' arithmetic on features, as the official code defines it (NVlabs/stylegan2-ada-pytorch metrics/).

- :class:`MeanCov`: streaming float64 sums (count, sum, sum of outer products) -> mean and the official covariance
  ``raw_cov / n - mu mu^T``;
- :func:`frechet_distance`: ``|mu_g - mu_r|^2 + Tr(S_g + S_r - 2 sqrtm(S_g S_r))`` with scipy's ``sqrtm`` and the
  real part (when the square root is not finite -- singular covariances from few samples -- it is retried with
  ``eps * I`` added to both, as clean-fid does; a tiny imaginary part never raises);
- :func:`kernel_inception_distance`: 100 subsets of m = min(n_real, n_gen, 1000) rows drawn without replacement,
  kernel ``(x y^T / d + 1)^3``, the unbiased MMD^2 per subset, averaged; the raw value (not x 1e3);
- :class:`InceptionScore`: softmax probabilities streamed into 10 consecutive splits, ``exp(mean KL(p(y|x) || p(y)))``
  per split, mean and std over splits;
- :func:`precision_recall`: k-NN radii (the (k+1)-th smallest distance within a set, itself included) in row and
  column blocks, so memory is bounded by the block size, not by the number of images.
"""

from __future__ import annotations

import warnings
from typing import Optional, Tuple

import numpy as np
import torch

from ..errors import StyleforgeError

__all__ = ["MeanCov", "frechet_distance", "kernel_inception_distance", "InceptionScore", "precision_recall",
           "filtered_mean"]


def _scipy_sqrtm():
    try:
        import scipy.linalg
    except ImportError:  # pragma: no cover - depends on the environment
        raise StyleforgeError("FID needs scipy: pip install 'styleforge[metrics]' (or pip install scipy)") from None
    return scipy.linalg.sqrtm


class MeanCov:
    """Running float64 statistics of feature rows: ``update(x [n, d])``, then ``mean()``, ``cov()``."""

    def __init__(self):
        self.count = 0
        self.raw_mean: Optional[np.ndarray] = None
        self.raw_cov: Optional[np.ndarray] = None

    def update(self, x) -> None:
        x = torch.as_tensor(x).detach().to("cpu", torch.float64)
        if x.ndim != 2:
            raise ValueError(f"features must be [N, D], got {list(x.shape)}")
        if self.raw_mean is None:
            self.raw_mean = np.zeros([x.shape[1]], dtype=np.float64)
            self.raw_cov = np.zeros([x.shape[1], x.shape[1]], dtype=np.float64)
        self.count += x.shape[0]
        self.raw_mean += x.sum(dim=0).numpy()
        self.raw_cov += (x.T @ x).numpy()

    def mean(self) -> np.ndarray:
        return self.raw_mean / self.count

    def cov(self) -> np.ndarray:
        mu = self.mean()
        return self.raw_cov / self.count - np.outer(mu, mu)


def frechet_distance(mu_gen: np.ndarray, sigma_gen: np.ndarray, mu_real: np.ndarray, sigma_real: np.ndarray,
                     eps: float = 1e-6) -> float:
    """The Fréchet distance of two Gaussians (official ``compute_fid``: gen first, real second)."""
    sqrtm = _scipy_sqrtm()
    mu_gen, mu_real = np.asarray(mu_gen, np.float64), np.asarray(mu_real, np.float64)
    sigma_gen, sigma_real = np.asarray(sigma_gen, np.float64), np.asarray(sigma_real, np.float64)
    m = np.square(mu_gen - mu_real).sum()
    with warnings.catch_warnings():  # singular products (few samples) warn; the result is checked below
        warnings.simplefilter("ignore")
        s = sqrtm(np.dot(sigma_gen, sigma_real))
        if not np.isfinite(s).all():
            offset = np.eye(sigma_gen.shape[0]) * eps
            s = sqrtm(np.dot(sigma_gen + offset, sigma_real + offset))
    return float(np.real(m + np.trace(sigma_gen + sigma_real - s * 2)))


def kernel_inception_distance(real: np.ndarray, gen: np.ndarray, num_subsets: int = 100,
                              max_subset_size: int = 1000, rng: Optional[np.random.RandomState] = None) -> float:
    """KID (official ``compute_kid``) of feature arrays [n, d] (numpy arrays or memmaps: only subsets are read)."""
    rng = rng if rng is not None else np.random.RandomState(0)
    n = real.shape[1]
    m = min(real.shape[0], gen.shape[0], max_subset_size)
    if m < 2:
        raise StyleforgeError(f"KID needs at least 2 real and 2 generated images (got {real.shape[0]} real, "
                              f"{gen.shape[0]} generated); use a larger dataset")
    t = 0.0
    for _ in range(num_subsets):
        x = np.asarray(gen[rng.choice(gen.shape[0], m, replace=False)], dtype=np.float64)
        y = np.asarray(real[rng.choice(real.shape[0], m, replace=False)], dtype=np.float64)
        a = (x @ x.T / n + 1) ** 3 + (y @ y.T / n + 1) ** 3
        b = (x @ y.T / n + 1) ** 3
        t += (a.sum() - np.diag(a).sum()) / (m - 1) - b.sum() * 2 / m
    return float(t / num_subsets / m)


class InceptionScore:
    """IS streamed over ``num_gen`` images in ``num_splits`` consecutive splits (official bounds
    ``i * num_gen // num_splits``). Per split it keeps sum(p log p) and sum(p), which give the mean KL exactly:
    ``mean_i KL(p_i || p_bar) = (sum_i sum_y p log p - sum_y P_y log(P_y / n)) / n``."""

    def __init__(self, num_gen: int, num_splits: int = 10):
        if num_gen < num_splits:
            raise StyleforgeError(f"IS needs at least {num_splits} images for its {num_splits} splits (got {num_gen})")
        self.num_gen, self.num_splits = num_gen, num_splits
        self.bounds = [i * num_gen // num_splits for i in range(num_splits + 1)]
        self.plogp = np.zeros([num_splits], dtype=np.float64)
        self.psum: Optional[np.ndarray] = None
        self.seen = 0

    @staticmethod
    def probabilities(out: torch.Tensor) -> torch.Tensor:
        """The detector's IS output as probabilities: used as is when it already is a distribution per row (the
        official file returns softmax probabilities); otherwise taken as logits and soft-maxed."""
        out = out.detach().to(torch.float64)
        if bool((out >= 0).all()) and float((out.sum(dim=1) - 1).abs().max()) <= 1e-3:
            return out
        return torch.softmax(out, dim=1)

    def update(self, out: torch.Tensor) -> None:
        p = self.probabilities(out).cpu()
        if self.psum is None:
            self.psum = np.zeros([self.num_splits, p.shape[1]], dtype=np.float64)
        start = self.seen
        for s in range(self.num_splits):
            lo, hi = max(self.bounds[s], start), min(self.bounds[s + 1], start + p.shape[0])
            if lo >= hi:
                continue
            part = p[lo - start: hi - start]
            self.plogp[s] += torch.special.xlogy(part, part).sum().item()
            self.psum[s] += part.sum(dim=0).numpy()
        self.seen += p.shape[0]

    def result(self) -> Tuple[float, float]:
        scores = []
        for s in range(self.num_splits):
            n = self.bounds[s + 1] - self.bounds[s]
            P = self.psum[s]
            cross = torch.special.xlogy(torch.from_numpy(P), torch.from_numpy(P / n)).sum().item()
            scores.append(np.exp((self.plogp[s] - cross) / n))
        return float(np.mean(scores)), float(np.std(scores))


def _kth_radii(manifold: np.ndarray, k: int, row_batch: int, col_batch: int, device) -> torch.Tensor:
    """The (k+1)-th smallest distance of every manifold row to the manifold (itself included), in fp16 like the
    official code; only a [row_batch, col_batch] block of distances is held at once."""
    n = manifold.shape[0]
    radii = []
    for r0 in range(0, n, row_batch):
        rows = torch.from_numpy(np.array(manifold[r0: r0 + row_batch])).to(device, torch.float32)
        best = None
        for c0 in range(0, n, col_batch):
            cols = torch.from_numpy(np.array(manifold[c0: c0 + col_batch])).to(device, torch.float32)
            d = torch.cdist(rows, cols).to(torch.float16).to(torch.float32)
            best = d if best is None else torch.cat([best, d], dim=1)
            if best.shape[1] > k + 1:
                best = best.topk(k + 1, dim=1, largest=False).values
        radii.append(best.max(dim=1).values.to(torch.float16))
    return torch.cat(radii)


def _covered(probes: np.ndarray, manifold: np.ndarray, radii: torch.Tensor, row_batch: int, col_batch: int,
             device) -> float:
    """Fraction of probe rows within some manifold row's radius."""
    hits = 0
    for r0 in range(0, probes.shape[0], row_batch):
        rows = torch.from_numpy(np.array(probes[r0: r0 + row_batch])).to(device, torch.float32)
        pred = torch.zeros([rows.shape[0]], dtype=torch.bool, device=device)
        for c0 in range(0, manifold.shape[0], col_batch):
            cols = torch.from_numpy(np.array(manifold[c0: c0 + col_batch])).to(device, torch.float32)
            d = torch.cdist(rows, cols).to(torch.float16)
            pred |= (d <= radii[c0: c0 + col_batch].to(device)).any(dim=1)
        hits += int(pred.sum())
    return hits / probes.shape[0]


def precision_recall(real: np.ndarray, gen: np.ndarray, nhood_size: int = 3, row_batch_size: int = 10000,
                     col_batch_size: int = 10000, device="cpu") -> Tuple[float, float]:
    """Improved precision and recall (official ``compute_pr``) of feature arrays [n, d] (float16 as the official
    code keeps them; distances are computed in float32 and rounded to float16 before the comparisons)."""
    for what, arr in (("real", real), ("generated", gen)):
        if arr.shape[0] < nhood_size + 1:
            raise StyleforgeError(f"precision/recall needs at least {nhood_size + 1} {what} images for its "
                                  f"{nhood_size}-nearest-neighbour radii (got {arr.shape[0]}); use a larger dataset")
    if torch.device(device).type == "cpu":  # same numbers, smaller blocks (4M distances, 2,500 feature rows)
        col_batch_size = min(col_batch_size, 2500)
        row_batch_size = max(1, min(row_batch_size, 4_000_000 // col_batch_size))
    out = []
    for manifold, probes in ((real, gen), (gen, real)):
        radii = _kth_radii(manifold, nhood_size, row_batch_size, col_batch_size, device)
        out.append(_covered(probes, manifold, radii, row_batch_size, col_batch_size, device))
    return out[0], out[1]


def filtered_mean(dist: np.ndarray) -> float:
    """PPL's final value: the mean of the samples between the 1st percentile (rounded down to a sample) and the
    99th (rounded up), as the official code filters them."""
    dist = np.asarray(dist, dtype=np.float64)
    lo = np.percentile(dist, 1, method="lower")
    hi = np.percentile(dist, 99, method="higher")
    return float(np.extract(np.logical_and(dist >= lo, dist <= hi), dist).mean())
