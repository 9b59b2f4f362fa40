"""Low-level tensor ops of StyleGAN2 in plain PyTorch: FIR resampling, bias + activation, (modulated) convolution.

Everything here runs on any device torch supports (CPU, CUDA, MPS) without a compiled extension. The
numerics follow the published StyleGAN2-ADA definitions (zero-insertion upsampling, padding, a normalised
[1,3,3,1] FIR filter, decimation; bias, activation, gain, clamp), so official weights give official images.
Where a faster formulation exists for the cases StyleGAN2 uses (the separable 4-tap filter), it is used
in place of the generic one; both agree to float rounding and the generic one stays as the reference.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
from typing import Iterator, Optional, Sequence

import torch
import torch.nn.functional as F

# ----------------------------------------------------------------------------------------------------------
# Activations: name -> (function, default gain). Gains are the ones StyleGAN2 uses to keep unit variance.

_SQRT2 = math.sqrt(2.0)

ACTIVATIONS = {
    "linear": (lambda x: x, 1.0),
    "relu": (F.relu, _SQRT2),
    "lrelu": (lambda x: F.leaky_relu(x, 0.2), _SQRT2),
    "tanh": (torch.tanh, 1.0),
    "sigmoid": (torch.sigmoid, 1.0),
    "elu": (F.elu, 1.0),
    "selu": (F.selu, 1.0),
    "softplus": (F.softplus, 1.0),
    "swish": (lambda x: torch.sigmoid(x) * x, _SQRT2),
}


def activation_gain(name: str) -> float:
    """Default output gain of activation ``name``."""
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; expected one of {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name][1]


def bias_act(
    x: torch.Tensor,
    b: Optional[torch.Tensor] = None,
    act: str = "linear",
    gain: Optional[float] = None,
    clamp: Optional[float] = None,
    dim: int = 1,
) -> torch.Tensor:
    """Add a bias along ``dim``, apply an activation, multiply by ``gain`` and clamp to [-clamp, clamp].

    ``gain=None`` means the activation's default gain. Works in place when no gradient is being recorded,
    which halves the memory traffic of this op at high resolutions.
    """
    fn, def_gain = ACTIVATIONS[act]
    gain = def_gain if gain is None else float(gain)
    inplace = not (torch.is_grad_enabled() and (x.requires_grad or (b is not None and b.requires_grad)))
    if b is not None:
        shape = [-1 if i == dim else 1 for i in range(x.ndim)]
        b = b.reshape(shape)
        x = x.add_(b) if inplace else x + b
    if act == "lrelu" and inplace:
        x = F.leaky_relu_(x, 0.2)
    elif act == "relu" and inplace:
        x = F.relu_(x)
    elif act != "linear":
        x = fn(x)
    if gain != 1:
        x = x.mul_(gain) if inplace else x * gain
    if clamp is not None and clamp >= 0:
        x = x.clamp_(-clamp, clamp) if inplace else x.clamp(-clamp, clamp)
    return x


# ----------------------------------------------------------------------------------------------------------
# FIR filters.


def setup_filter(f: Sequence[float] = (1, 3, 3, 1), normalize: bool = True) -> torch.Tensor:
    """Build the 2-D resampling filter StyleGAN2 stores: a short 1-D kernel becomes its outer product.

    The [1,3,3,1] default gives a [4,4] float32 tensor that sums to 1 (as the official buffers do).
    """
    t = torch.as_tensor(f, dtype=torch.float32)
    if t.ndim == 0:
        t = t[None]
    if t.ndim == 1 and t.numel() < 8:
        t = torch.outer(t, t)
    if normalize:
        t = t / t.sum()
    return t


def _separable_taps(f: torch.Tensor) -> Optional[torch.Tensor]:
    """If the 2-D filter ``f`` is an outer product ``v v^T`` of a symmetric 1-D kernel, return ``v``."""
    if f.ndim != 2 or f.shape[0] != f.shape[1]:
        return None
    diag = torch.diagonal(f)
    if bool((diag <= 0).any()):
        return None
    v = diag.sqrt()
    if not torch.allclose(torch.outer(v, v), f, rtol=1e-6, atol=1e-9):
        return None
    return v


def _parse_padding(padding) -> tuple:
    if isinstance(padding, int):
        return (padding, padding, padding, padding)
    padding = tuple(int(p) for p in padding)
    if len(padding) == 2:
        return (padding[0], padding[0], padding[1], padding[1])
    assert len(padding) == 4
    return padding


def upfirdn2d_ref(
    x: torch.Tensor, f: torch.Tensor, up: int = 1, down: int = 1, padding=0, gain: float = 1.0
) -> torch.Tensor:
    """Reference upsample -> pad -> FIR filter -> downsample, on [N, C, H, W].

    ``padding`` is (x0, x1, y0, y1); negative values crop. The filter is applied as a true convolution
    (flipped), scaled by ``gain`` (for a 2-D filter) so that upsampling by 2 with gain 4 keeps the mean.
    """
    px0, px1, py0, py1 = _parse_padding(padding)
    n, c, h, w = x.shape
    if up > 1:
        x = x.reshape(n, c, h, 1, w, 1)
        x = F.pad(x, [0, up - 1, 0, 0, 0, up - 1])
        x = x.reshape(n, c, h * up, w * up)
    x = F.pad(x, [max(px0, 0), max(px1, 0), max(py0, 0), max(py1, 0)])
    x = x[:, :, max(-py0, 0): x.shape[2] - max(-py1, 0), max(-px0, 0): x.shape[3] - max(-px1, 0)]
    fk = (f * (gain ** (f.ndim / 2))).to(x.dtype).flip(list(range(f.ndim)))
    if fk.ndim == 2:
        weight = fk[None, None].expand(c, 1, *fk.shape)
        x = F.conv2d(x, weight, groups=c)
    else:  # separable 1-D filter: rows then columns
        x = F.conv2d(x, fk[None, None, None, :].expand(c, 1, 1, -1), groups=c)
        x = F.conv2d(x, fk[None, None, :, None].expand(c, 1, -1, 1), groups=c)
    if down > 1:
        x = x[:, :, ::down, ::down]
    return x


def _fir_valid_1d(x: torch.Tensor, taps: Sequence[float], dim: int) -> torch.Tensor:
    """'Valid' correlation of ``x`` with a short kernel along ``dim``, as a sum of shifted slices."""
    k = len(taps)
    size = x.shape[dim] - k + 1
    out = x.narrow(dim, 0, size) * taps[0]
    for i in range(1, k):
        out.add_(x.narrow(dim, i, size), alpha=taps[i])
    return out


_FAST_FIR = contextvars.ContextVar("styleforge_fast_fir", default=True)


@contextlib.contextmanager
def reference_fir() -> Iterator[None]:
    """Within this block every FIR resampling uses the reference formulation (bit-for-bit op order of the
    official code). Used for ``fp16=True``, where fp16 rounding would amplify float-order differences."""
    token = _FAST_FIR.set(False)
    try:
        yield
    finally:
        _FAST_FIR.reset(token)


def upfirdn2d(
    x: torch.Tensor, f: torch.Tensor, up: int = 1, down: int = 1, padding=0, gain: float = 1.0
) -> torch.Tensor:
    """Same result as :func:`upfirdn2d_ref`, faster for separable short filters.

    For an outer-product filter (StyleGAN2's [1,3,3,1]) the 2-D FIR is run as two 1-D passes of shifted
    slice sums, which avoids the slow depthwise convolution kernels on CPU. Upsampling by 2 is done in
    polyphase form (no zero-inserted tensor is ever built) and downsampling by 2 computes only the kept
    samples. Used on CPU; other devices run the reference (their depthwise convolutions are fast).
    """
    px0, px1, py0, py1 = _parse_padding(padding)
    fast = _FAST_FIR.get() and x.device.type == "cpu" and x.dtype in (torch.float32, torch.float64)
    v = _separable_taps(f) if fast and f.ndim == 2 and f.shape[0] <= 8 else None
    if v is None or up not in (1, 2) or down not in (1, 2):
        return upfirdn2d_ref(x, f, up=up, down=down, padding=padding, gain=gain)
    g1 = math.sqrt(gain)
    taps = (v.flip(0) * g1).tolist()  # true convolution: flip the (symmetric) kernel
    x = _fir_axis(x, taps, up, down, px0, px1, dim=3)
    x = _fir_axis(x, taps, up, down, py0, py1, dim=2)
    return x


def _pad_axis(x: torch.Tensor, dim: int, p0: int, p1: int) -> torch.Tensor:
    """Zero-pad (positive) or crop (negative) ``x`` along ``dim``."""
    if p0 > 0 or p1 > 0:
        x = F.pad(x, [0, 0] * (x.ndim - 1 - dim) + [max(p0, 0), max(p1, 0)])
    if p0 < 0 or p1 < 0:
        x = x.narrow(dim, max(-p0, 0), x.shape[dim] - max(-p0, 0) - max(-p1, 0))
    return x


def _fir_axis(x: torch.Tensor, taps, up: int, down: int, p0: int, p1: int, dim: int) -> torch.Tensor:
    """One axis of separable upfirdn: zero-insert by ``up``, pad (p0, p1), correlate with ``taps``, keep every ``down``."""
    k = len(taps)
    if up == 1:
        x = _pad_axis(x, dim, p0, p1)
        size = (x.shape[dim] - k) // down + 1
        out = None
        for i, t in enumerate(taps):
            s = x.narrow(dim, i, (size - 1) * down + 1)
            if down > 1:
                s = _stride(s, dim, down)
            out = s * t if out is None else out.add_(s, alpha=t)
        return out
    if down != 1:
        raise NotImplementedError("up and down together")
    # Polyphase upsampling. The zero-inserted signal u has u[up*j] = x[j] and zeros elsewhere (length up*n).
    # Output y[m] = sum_i taps[i] * u[m + i - p0]; for outputs m = m0 + up*q only the taps that land on
    # multiples of up contribute, reading x[q + (m0 + i - p0) // up].
    n_in = x.shape[dim]
    n_out = up * n_in + p0 + p1 - k + 1
    cnt = -(-n_out // up)
    phases = []
    for m0 in range(up):
        sel = [(t, (m0 + i - p0) // up) for i, t in enumerate(taps) if (m0 + i - p0) % up == 0]
        if not sel:
            shape = list(x.shape)
            shape[dim] = cnt
            phases.append(x.new_zeros(shape))
            continue
        lo = min(o for _, o in sel)
        hi = max(o for _, o in sel) + cnt - 1
        pad_lo, pad_hi = max(0, -lo), max(0, hi - (n_in - 1))
        xs = _pad_axis(x, dim, pad_lo, pad_hi)
        out = None
        for t, o in sel:
            s = xs.narrow(dim, o + pad_lo, cnt)
            out = s * t if out is None else out.add_(s, alpha=t)
        phases.append(out)
    y = torch.stack(phases, dim=dim + 1)
    shape = list(phases[0].shape)
    shape[dim] = cnt * up
    return y.reshape(shape).narrow(dim, 0, n_out)


def _stride(x: torch.Tensor, dim: int, step: int) -> torch.Tensor:
    idx = [slice(None)] * x.ndim
    idx[dim] = slice(None, None, step)
    return x[tuple(idx)]


def upsample2d(x: torch.Tensor, f: torch.Tensor, up: int = 2) -> torch.Tensor:
    """Upsample [N,C,H,W] by ``up`` with filter ``f`` (StyleGAN2's image-skip upsampling)."""
    fw = f.shape[-1]
    p = [(fw + up - 1) // 2, (fw - up) // 2]
    return upfirdn2d(x, f, up=up, padding=(p[0], p[1], p[0], p[1]), gain=up * up)


def downsample2d(x: torch.Tensor, f: torch.Tensor, down: int = 2) -> torch.Tensor:
    """Downsample [N,C,H,W] by ``down`` with filter ``f``."""
    fw = f.shape[-1]
    p = [(fw - down + 1) // 2, (fw - down) // 2]
    return upfirdn2d(x, f, down=down, padding=(p[0], p[1], p[0], p[1]))


# ----------------------------------------------------------------------------------------------------------
# Convolution with optional FIR up/downsampling.


def conv2d_resample(
    x: torch.Tensor,
    w: torch.Tensor,
    f: Optional[torch.Tensor] = None,
    up: int = 1,
    down: int = 1,
    padding: int = 0,
    groups: int = 1,
) -> torch.Tensor:
    """2-D convolution (correlation, as torch does) of ``x`` with ``w`` [O, I/groups, kh, kw], with the
    resampling StyleGAN2 uses around it.

    - up=2: a stride-2 transposed convolution with the kernel as stored, then the FIR filter (gain 4);
      for 1x1 kernels: convolve, then FIR-upsample.
    - down=2: FIR filter, then a stride-2 convolution; for 1x1 kernels: FIR-downsample, then convolve.
    - otherwise: plain convolution with padding ``padding``.
    """
    out_ch, in_per_group, kh, kw = w.shape
    fw = f.shape[-1] if f is not None else 1
    px0 = px1 = py0 = py1 = padding
    if up > 1:
        px0 += (fw + up - 1) // 2
        px1 += (fw - up) // 2
        py0 += (fw + up - 1) // 2
        py1 += (fw - up) // 2
    if down > 1:
        px0 += (fw - down + 1) // 2
        px1 += (fw - down) // 2
        py0 += (fw - down + 1) // 2
        py1 += (fw - down) // 2

    if kw == 1 and kh == 1 and down > 1 and up == 1:
        x = upfirdn2d(x, f, down=down, padding=(px0, px1, py0, py1))
        return F.conv2d(x, w, groups=groups)
    if kw == 1 and kh == 1 and up > 1 and down == 1:
        x = F.conv2d(x, w, groups=groups)
        return upfirdn2d(x, f, up=up, padding=(px0, px1, py0, py1), gain=up * up)
    if down > 1 and up == 1:
        x = upfirdn2d(x, f, padding=(px0, px1, py0, py1))
        return F.conv2d(x, w, stride=down, groups=groups)
    if up > 1:
        if groups == 1:
            wt = w.transpose(0, 1)
        else:
            wt = w.reshape(groups, out_ch // groups, in_per_group, kh, kw).transpose(1, 2)
            wt = wt.reshape(groups * in_per_group, out_ch // groups, kh, kw)
        px0 -= kw - 1
        px1 -= kw - up
        py0 -= kh - 1
        py1 -= kh - up
        pxt = max(min(-px0, -px1), 0)
        pyt = max(min(-py0, -py1), 0)
        x = F.conv_transpose2d(x, wt, stride=up, padding=[pyt, pxt], groups=groups)
        x = upfirdn2d(x, f, padding=(px0 + pxt, px1 + pxt, py0 + pyt, py1 + pyt), gain=up * up)
        if down > 1:
            x = upfirdn2d(x, f, down=down)
        return x
    if px0 == px1 and py0 == py1 and px0 >= 0 and py0 >= 0:
        return F.conv2d(x, w, padding=[py0, px0], groups=groups)
    x = upfirdn2d(x, f if f is not None else setup_filter([1]), padding=(px0, px1, py0, py1))
    return F.conv2d(x, w, groups=groups)


def modulated_conv2d(
    x: torch.Tensor,
    weight: torch.Tensor,
    styles: torch.Tensor,
    noise: Optional[torch.Tensor] = None,
    up: int = 1,
    padding: int = 0,
    resample_filter: Optional[torch.Tensor] = None,
    demodulate: bool = True,
    fused: bool = True,
) -> torch.Tensor:
    """StyleGAN2's modulated convolution: scale the kernel's input channels by per-sample ``styles``,
    optionally demodulate (normalise each output filter to unit norm), convolve, then add ``noise``.

    ``fused=True`` builds per-sample kernels and runs one grouped convolution (best for batch 1);
    ``fused=False`` scales activations before and after a shared convolution (best for larger batches).
    Both compute the same function. In fp16 the kernel and styles are pre-normalised to avoid overflow,
    as the official mixed-precision path does.
    """
    n = x.shape[0]
    out_ch, in_ch, kh, kw = weight.shape
    if x.dtype == torch.float16 and demodulate:
        weight = weight * (
            1 / math.sqrt(in_ch * kh * kw) / weight.norm(float("inf"), dim=[1, 2, 3], keepdim=True)
        )
        styles = styles / styles.norm(float("inf"), dim=1, keepdim=True)

    if not fused:
        dcoefs = None
        if demodulate and x.dtype == torch.float16:
            # exact op order of the official mixed-precision path (fp16 rounding amplifies any reordering)
            wm = weight.unsqueeze(0) * styles.reshape(n, 1, -1, 1, 1)
            dcoefs = (wm.square().sum(dim=[2, 3, 4]) + 1e-8).rsqrt()
        elif demodulate:
            # sum_{i,k} (w_oik s_ni)^2 = s_n^2 . sum_k w_oik^2 : no per-sample kernels needed
            wsq = weight.square().sum(dim=[2, 3])  # [O, I]
            dcoefs = (styles.square() @ wsq.t() + 1e-8).rsqrt()  # [N, O]
        x = x * styles.to(x.dtype).reshape(n, -1, 1, 1)
        x = conv2d_resample(x, weight.to(x.dtype), f=resample_filter, up=up, padding=padding)
        if demodulate and noise is not None:
            x = torch.addcmul(noise.to(x.dtype), x, dcoefs.to(x.dtype).reshape(n, -1, 1, 1))
        elif demodulate:
            x = x * dcoefs.to(x.dtype).reshape(n, -1, 1, 1)
        elif noise is not None:
            x = x + noise.to(x.dtype)
        return x

    w = weight.unsqueeze(0) * styles.reshape(n, 1, -1, 1, 1)  # [N, O, I, kh, kw]
    if demodulate:
        dcoefs = (w.square().sum(dim=[2, 3, 4]) + 1e-8).rsqrt()
        w = w * dcoefs.reshape(n, -1, 1, 1, 1)
    x = x.reshape(1, -1, *x.shape[2:])
    w = w.reshape(-1, in_ch, kh, kw)
    x = conv2d_resample(x, w.to(x.dtype), f=resample_filter, up=up, padding=padding, groups=n)
    x = x.reshape(n, -1, *x.shape[2:])
    if noise is not None:
        # Add in the noise's precision and round once to x's dtype (what an in-place add into fp16 does).
        x = x + noise if x.dtype == noise.dtype else (x.to(noise.dtype) + noise).to(x.dtype)
    return x
