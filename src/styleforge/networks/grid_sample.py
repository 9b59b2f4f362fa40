"""Bilinear ``grid_sample`` whose gradient can itself be differentiated, on every torch version.

ADA's geometric augmentations warp real images with ``grid_sample``, and R1 regularisation differentiates D's
gradient with respect to those images: a double backward through the warp. torch's own ``grid_sampler_2d_backward``
has no derivative before torch 2.13 ("derivative for aten::grid_sampler_2d_backward is not implemented", seen on
torch 2.11 on CPU and CUDA), which the official code works around the same way: the backward is a function of its
own whose derivative with respect to the incoming gradient is again ``grid_sample`` (the warp is linear in the
image). Forward and first backward are torch's own kernels, so results are bit for bit those of
``F.grid_sample``. The grid itself gets no second derivative (augmentations never need it).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["grid_sample"]


def grid_sample(input: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """``F.grid_sample(input, grid, mode="bilinear", padding_mode="zeros", align_corners=False)``, twice
    differentiable with respect to ``input``."""
    return _GridSample.apply(input, grid)


def _sample(input, grid):
    return F.grid_sample(input, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


class _GridSample(torch.autograd.Function):
    @staticmethod
    def forward(ctx, input, grid):
        ctx.save_for_backward(input, grid)
        return _sample(input, grid)

    @staticmethod
    def backward(ctx, grad_output):
        input, grid = ctx.saved_tensors
        grad_input, grad_grid = _GridSampleBackward.apply(grad_output, input, grid)
        return (grad_input if ctx.needs_input_grad[0] else None), (grad_grid if ctx.needs_input_grad[1] else None)


class _GridSampleBackward(torch.autograd.Function):
    @staticmethod
    def forward(ctx, grad_output, input, grid):
        # interpolation 0 = bilinear, padding 0 = zeros; both gradients (the mask lets torch skip one later)
        grad_input, grad_grid = torch.ops.aten.grid_sampler_2d_backward(
            grad_output, input, grid, 0, 0, False, [True, True])
        ctx.save_for_backward(grid)
        return grad_input, grad_grid

    @staticmethod
    def backward(ctx, grad2_grad_input, grad2_grad_grid):
        (grid,) = ctx.saved_tensors
        grad2_grad_output = None
        if ctx.needs_input_grad[0] and grad2_grad_input is not None:
            grad2_grad_output = _sample(grad2_grad_input, grid)  # grad_input is linear in grad_output
        if ctx.needs_input_grad[2]:
            raise NotImplementedError("grid_sample: no second derivative with respect to the grid")
        return grad2_grad_output, None, None
