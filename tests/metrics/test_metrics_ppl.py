"""PPL of a linear generator under a squared-L2 distance equals its analytic value."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from conftest import tiny_generator
from styleforge.metrics import MetricOptions, calc_metric, ppl_distances, ppl_latents

RES = 8


class LinearG(nn.Module):
    """img = reshape(mean_over_layers(w) @ B), w = z @ A (float64 inside, so finite differences are exact)."""

    z_dim, c_dim, w_dim, num_ws, img_resolution, img_channels = 6, 0, 5, 3, RES, 3

    def __init__(self, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.register_buffer("A", torch.randn([6, 5], generator=g, dtype=torch.float64))
        self.register_buffer("B", torch.randn([5, 3 * RES * RES], generator=g, dtype=torch.float64) * 0.1)
        G = self

        class Mapping(nn.Module):
            def forward(self, z, c):
                return (z.double() @ G.A).unsqueeze(1).repeat(1, G.num_ws, 1)

        class Synthesis(nn.Module):
            def forward(self, ws, noise_mode="const"):
                return (ws.mean(dim=1) @ G.B).reshape(-1, 3, RES, RES)

        self.mapping, self.synthesis = Mapping(), Synthesis()

    def crop_matrix(self, crop):
        B = self.B.numpy().reshape(5, 3, RES, RES)
        if crop:
            k = RES // 8
            B = B[:, :, 3 * k: 7 * k, 2 * k: 6 * k]
        return B.reshape(5, -1)


def sq_l2(a, b):
    return (a - b).square().flatten(1).sum(dim=1)


def analytic(G, z0, z1, t, space, crop):
    """127.5^2 |d img / dt|^2: the derivative of the path (lerp in W, or slerp in Z mapped linearly)."""
    M = G.A.numpy() @ G.crop_matrix(crop)
    if space == "w":
        dz = z1 - z0
    else:
        a = z0 / np.linalg.norm(z0, axis=1, keepdims=True)
        b = z1 / np.linalg.norm(z1, axis=1, keepdims=True)
        d = (a * b).sum(axis=1, keepdims=True)
        theta = np.arccos(d)
        c = b - d * a
        c = c / np.linalg.norm(c, axis=1, keepdims=True)
        p = t[:, None] * theta
        dz = theta * (-a * np.sin(p) + c * np.cos(p))
    return 127.5 ** 2 * ((dz @ M) ** 2).sum(axis=1)


@pytest.mark.parametrize("space,sampling,crop", [("w", "end", False), ("w", "full", True), ("z", "full", False),
                                                 ("z", "end", True)])
def test_per_sample_distance_equals_the_analytic_value(space, sampling, crop):
    G = LinearG()
    t, z0, z1 = ppl_latents(np.random.RandomState(3), 16, G.z_dim, sampling)
    as_t = lambda a: torch.from_numpy(np.asarray(a, dtype=np.float32))  # noqa: E731
    got = ppl_distances(G, as_t(z0), as_t(z1), torch.zeros([16, 0]), as_t(t), space=space, epsilon=1e-4, crop=crop,
                        distance=sq_l2).numpy()
    z0, z1, t = (np.asarray(a, np.float32).astype(np.float64) for a in (z0, z1, t))
    want = analytic(G, z0, z1, t, space, crop)
    rtol = 1e-6 if space == "w" else 1e-2  # Z: slerp runs in float32 (epsilon 1e-4 -> a few 1e-3 relative)
    np.testing.assert_allclose(got, want, rtol=rtol)


def test_ppl_metric_equals_the_filtered_analytic_mean():
    G = LinearG()
    r = calc_metric("ppl_wfull_1k", G, None, options=MetricOptions(num_gen=101, seed=5), distance=sq_l2)
    rng = np.random.RandomState(5)  # the same draws, batch by batch (official batches of 2)
    values = []
    for start in range(0, 101, 2):
        n = min(2, 101 - start)
        t, z0, z1 = ppl_latents(rng, n, G.z_dim, "full")
        values.append(analytic(G, *(np.asarray(a, np.float32).astype(np.float64) for a in (z0, z1, t)), "w", True))
    d = np.concatenate(values)
    lo, hi = np.percentile(d, 1, method="lower"), np.percentile(d, 99, method="higher")
    want = d[(d >= lo) & (d <= hi)].mean()
    assert r.results["ppl_wfull_1k"] == pytest.approx(want, rel=1e-6)
    assert r.num_images == {"fake": 101}


def test_ppl_restores_the_noise_buffers_and_is_seeded():
    G = tiny_generator(res=16)
    before = {k: v.clone() for k, v in G.named_buffers() if k.endswith("noise_const")}
    opts = MetricOptions(num_gen=6)
    a = calc_metric("ppl2_wend_1k", G, None, options=opts, distance=sq_l2).results["ppl2_wend_1k"]
    b = calc_metric("ppl2_wend_1k", G, None, options=opts, distance=sq_l2).results["ppl2_wend_1k"]
    assert np.isfinite(a) and a > 0 and a == b
    for k, v in G.named_buffers():
        if k in before:
            assert torch.equal(v, before[k])
