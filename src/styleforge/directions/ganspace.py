"""GANSpace: principal components of W over random samples of the mapping network, each with its standard
deviation; layer-wise edits E(v_i, j-k) (component i applied to latent layers j to k) as Directions.

The PCA streams: samples are mapped in chunks and only their running sum and scatter matrix (w_dim x w_dim, in
float64, about a shifted mean so that large means do not cost precision) are kept, so memory does not grow with
the number of samples (100,000 samples of a 512-D W cost the same 2 MiB as 1,000). The covariance is then
decomposed with a symmetric eigensolver; this is exact PCA, not an approximation. z is drawn on the CPU from
``torch.Generator().manual_seed(seed)`` (the same z on every device, for any chunk size), so runs are
reproducible.

A GANSpace direction has ``scale`` = its component's standard deviation, so strength 2 moves a latent by two
standard deviations of W along the component.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence, Union

import numpy as np
import torch

from ..errors import StyleforgeError
from ..latents import check_truncation, class_label
from ..utils.progress import Callback, reporter
from .direction import Direction, layers_text, parse_layers
from .linalg import eigh_descending
from .render import check_w_space, device_of


@dataclass
class PCAResult:
    mean: np.ndarray          # [w_dim]
    components: np.ndarray    # [K, w_dim], unit rows, largest variance first
    stds: np.ndarray          # [K]: standard deviation of W along each component
    explained: np.ndarray     # [K]: fraction of W's total variance
    num_samples: int
    seed: int


class StreamingCovariance:
    """Mean and covariance of rows added chunk by chunk (numpy or torch, on any device), in float64 and in memory
    that does not depend on the number of rows."""

    def __init__(self, dim: int):
        self.n = 0
        self.shift: Optional[torch.Tensor] = None
        self.sum: Optional[torch.Tensor] = None
        self.scatter: Optional[torch.Tensor] = None

    def add(self, x) -> None:
        x = torch.as_tensor(x).to(torch.float64)
        if self.shift is None:
            self.shift = x.mean(dim=0)
            self.sum = torch.zeros_like(self.shift)
            self.scatter = torch.zeros(len(self.shift), len(self.shift), dtype=torch.float64, device=x.device)
        d = x - self.shift
        self.n += len(x)
        self.sum += d.sum(dim=0)
        self.scatter += d.T @ d

    @property
    def mean(self) -> np.ndarray:
        return (self.shift + self.sum / self.n).cpu().numpy()

    def covariance(self) -> np.ndarray:
        m = self.sum / self.n
        return ((self.scatter - self.n * torch.outer(m, m)) / (self.n - 1)).cpu().numpy()


def pca(cov: StreamingCovariance, num_components: int, seed: int = 0) -> PCAResult:
    vals, comps = eigh_descending(cov.covariance())
    vals, comps = np.clip(vals[:num_components], 0, None), comps[:num_components]
    total = float(np.trace(cov.covariance()))
    return PCAResult(cov.mean.astype(np.float32), comps.astype(np.float32), np.sqrt(vals).astype(np.float32),
                     (vals / total if total > 0 else vals).astype(np.float32), cov.n, seed)


def pca_w(G: torch.nn.Module, num_samples: int = 100_000, num_components: int = 80, seed: int = 0,
          truncation_psi: float = 1.0, class_idx: Optional[int] = None, batch_size: int = 2048,
          callback: Optional[Callback] = None) -> PCAResult:
    """PCA of W over ``num_samples`` samples of ``G``'s mapping (see the module doc)."""
    check_w_space(G)
    check_truncation(truncation_psi)
    if not 1 <= num_components <= G.w_dim:
        raise StyleforgeError(f"use 1 to {G.w_dim} (the network's w_dim)", param="components", value=num_components)
    if num_samples <= num_components:
        raise StyleforgeError(f"need more samples than components ({num_components})", param="samples",
                              value=num_samples)
    dev = device_of(G)
    c = class_label(G, class_idx, dev)
    cov = StreamingCovariance(G.w_dim)
    gen = torch.Generator().manual_seed(seed)
    with reporter(callback).stage("ganspace", total=num_samples, unit="sample") as advance, torch.no_grad():
        for start in range(0, num_samples, batch_size):
            n = min(batch_size, num_samples - start)
            z = torch.randn([n, G.z_dim], generator=gen).to(dev)
            w = G.mapping(z, None if c is None else c.expand(n, -1),
                          truncation_psi=truncation_psi)[:, 0]
            cov.add(w)
            advance(n)
    return pca(cov, num_components, seed)


def ganspace_directions(result: PCAResult, layers: Union[None, str, Sequence[int]] = None,
                        num_ws: Optional[int] = None) -> List[Direction]:
    """One Direction per component, E(v_i, layers): applies to ``layers`` (None: all), ``scale`` = its std."""
    chosen = None if layers is None else parse_layers(layers, num_ws)
    spec = layers_text(chosen, num_ws)
    return [Direction(v, layers=chosen, name=f"pc{i:02d}", origin="ganspace", scale=float(s),
                      meta={"rank": i, "std": float(s), "explained_variance": float(e), "layer_range": spec})
            for i, (v, s, e) in enumerate(zip(result.components, result.stds, result.explained))]
