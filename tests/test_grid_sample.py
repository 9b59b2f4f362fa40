"""networks.grid_sample: torch's grid_sample, twice differentiable with respect to the image on every torch."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from styleforge.networks.grid_sample import grid_sample


def _inputs(dtype=torch.float32):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 9, 7, generator=g, dtype=dtype)
    grid = torch.rand(2, 6, 5, 2, generator=g, dtype=dtype) * 2.4 - 1.2  # some samples fall outside (zeros)
    return x, grid


def test_forward_and_gradients_are_torchs_own():
    x, grid = _inputs()
    w = torch.randn(2, 3, 6, 5)
    a = x.clone().requires_grad_(True)
    b = x.clone().requires_grad_(True)
    ya = grid_sample(a, grid)
    yb = F.grid_sample(b, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    assert torch.equal(ya, yb)
    (ya * w).sum().backward()
    (yb * w).sum().backward()
    assert torch.equal(a.grad, b.grad)


def test_double_backward_matches_finite_differences():
    """The R1 pattern: the gradient of a loss through the warp, differentiated again (gradgradcheck in float64)."""
    x, grid = _inputs(torch.float64)
    x.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda t: grid_sample(t, grid), (x,))
    assert torch.autograd.gradgradcheck(lambda t: grid_sample(t, grid), (x,))


def test_r1_through_the_warp():
    """d/dtheta of |d sum(f(warp(x))) / dx|^2 exists and equals torch's own where torch has it (>= 2.13)."""
    x, grid = _inputs(torch.float64)
    conv = torch.nn.Conv2d(3, 4, 3).double()

    def penalty(sample):
        xi = x.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(conv(sample(xi, grid)).square().sum(), xi, create_graph=True)
        return g.square().sum()

    p = penalty(grid_sample)
    (ours,) = torch.autograd.grad(p, conv.weight)
    assert torch.isfinite(ours).all() and ours.abs().sum() > 0
    try:  # torch's own double backward exists from torch 2.13 (on an H200 with torch 2.11 it raised)
        ref = torch.autograd.grad(penalty(lambda t, g: F.grid_sample(t, g, align_corners=False)), conv.weight)[0]
    except RuntimeError as e:
        assert "not implemented" in str(e)
        return
    assert torch.allclose(ours, ref, rtol=1e-10, atol=1e-12)
