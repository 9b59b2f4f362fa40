"""Low-level tensor ops of StyleGAN2 in plain PyTorch: FIR resampling, bias + activation, (modulated) convolution.

Everything here runs on any device torch supports (CPU, CUDA, MPS) without a compiled extension. The
numerics follow the published StyleGAN2-ADA definitions (zero-insertion upsampling, padding, a normalised
[1,3,3,1] FIR filter, decimation; bias, activation, gain, clamp), so official weights give official images.
Speed on CPU comes from running activations channels-last (see the generator), where these
depthwise and transposed convolutions are several times faster than in the default layout.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import numpy as np
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

# Activations with act(g*x) == g*act(x) for g > 0: their gain can be applied before them (folded into the
# preceding convolution) instead of as a separate pass over the output.
POSITIVELY_HOMOGENEOUS = frozenset({"linear", "relu", "lrelu"})


def bias_act(
    x: torch.Tensor,
    b: Optional[torch.Tensor] = None,
    act: str = "linear",
    gain: Optional[float] = None,
    clamp: Optional[float] = None,
    dim: int = 1,
    scratch: bool = False,
) -> torch.Tensor:
    """Add a bias along ``dim``, apply an activation, multiply by ``gain`` and clamp to [-clamp, clamp].

    ``gain=None`` means the activation's default gain. Works in place when no gradient is being recorded,
    which halves the memory traffic of this op at high resolutions. ``scratch=True``: the caller made ``x``
    just now and no backward formula saved it (e.g. the fresh output of an add), so the bias and the
    (lrelu/relu) activation run in place under autograd too, whose backward needs only their result.
    """
    fn, def_gain = ACTIVATIONS[act]
    gain = def_gain if gain is None else float(gain)
    inplace = not (torch.is_grad_enabled() and (x.requires_grad or (b is not None and b.requires_grad)))
    if b is not None:
        shape = [-1 if i == dim else 1 for i in range(x.ndim)]
        b = b.reshape(shape)
        x = x.add_(b) if inplace or scratch else x + b
    if act == "lrelu" and (inplace or scratch):
        x = F.leaky_relu_(x, 0.2)
    elif act == "relu" and (inplace or scratch):
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

    The [1,3,3,1] default gives a [4,4] float32 tensor that sums to 1 (as the official buffers do). Always
    built on the CPU with numpy, so that building a network runs no tensor ops.
    """
    a = np.asarray(f, dtype=np.float32)
    if a.ndim == 0:
        a = a[None]
    if a.ndim == 1 and a.size < 8:
        a = np.outer(a, a)
    if normalize:
        a = a / a.sum()
    return torch.tensor(a, dtype=torch.float32, device="cpu")


def _parse_padding(padding) -> tuple:
    if isinstance(padding, int):
        return (padding, padding, padding, padding)
    padding = tuple(int(p) for p in padding)
    if len(padding) == 2:
        return (padding[0], padding[0], padding[1], padding[1])
    assert len(padding) == 4
    return padding



def upfirdn2d(
    x: torch.Tensor, f: torch.Tensor, up: int = 1, down: int = 1, padding=0, gain: float = 1.0,
    bias: Optional[torch.Tensor] = None, flip_filter: bool = False,
) -> torch.Tensor:
    """Upsample (zero insertion) -> pad -> FIR filter -> downsample, on [N, C, H, W], then add ``bias`` [C].

    ``padding`` is (x0, x1, y0, y1); negative values crop. The filter is applied as a true convolution
    (flipped; ``flip_filter``: as given, a correlation), scaled by ``gain`` so that upsampling by 2 with gain 4
    keeps the mean. A 2-D filter runs as a depthwise convolution, which is fast on CPU for channels-last tensors
    (there the bias is added by the same call); a 1-D filter is applied to rows, then columns (``up`` or ``down``
    must be 1), as sums of shifted slices (:func:`_fir_axis`).
    """
    if flip_filter:
        f = f.flip(list(range(f.ndim)))
    px0, px1, py0, py1 = _parse_padding(padding)
    if f.ndim == 1:
        taps = (f * gain**0.5).flip(0).tolist()  # correlation taps of the convolution, gain per axis
        return _add_bias(_fir_axis(_fir_axis(x, taps, 3, up, down, px0, px1), taps, 2, up, down, py0, py1), bias)
    n, c, h, w = x.shape
    if f.ndim == 2 and down in (1, 2) and _is_channels_last(x):
        y = _upfirdn2d_channels_last(x, f, up, down, (px0, px1, py0, py1), gain, bias)
        if y is not None:
            return y
    if up > 1:
        x = x.reshape(n, c, h, 1, w, 1)
        x = F.pad(x, [0, up - 1, 0, 0, 0, up - 1])
        x = x.reshape(n, c, h * up, w * up)
    x = F.pad(x, [max(px0, 0), max(px1, 0), max(py0, 0), max(py1, 0)])
    x = x[:, :, max(-py0, 0): x.shape[2] - max(-py1, 0), max(-px0, 0): x.shape[3] - max(-px1, 0)]
    fk = (f * gain).to(x.dtype).flip([0, 1])
    x = F.conv2d(x, fk[None, None].repeat(c, 1, 1, 1), groups=c)
    if down > 1:
        x = x[:, :, ::down, ::down]
    return _add_bias(x, bias)


def _fir_axis(x: torch.Tensor, taps: Sequence[float], dim: int, up: int, down: int, pad0: int, pad1: int):
    """One axis of upfirdn2d: out[o] = sum_j taps[j] * z[o * down + j], z = ``x`` zero-stuffed by ``up`` and padded
    by (pad0, pad1). Computed per output phase as sums of shifted (strided) slices of ``x``: no zero-stuffed tensor,
    and on CPU several times faster than a 1-channel convolution. Terms are added in tap order."""
    if up > 1 and down > 1:
        raise ValueError("a 1-D filter resamples by up or by down, not both")
    n = x.shape[dim]
    n_out = (n * up + pad0 + pad1 - len(taps)) // down + 1
    phases = []
    for r in range(up):  # outputs o = up * q + r read x[q * down + d] for the taps whose z index is not a zero
        count = (n_out - r + up - 1) // up
        terms = [(t, (r * down + j - pad0) // up) for j, t in enumerate(taps) if (r * down + j - pad0) % up == 0]
        if not terms:  # a phase that reads only inserted zeros
            phases.append(x.new_zeros(x.shape[:dim] + (count,) + x.shape[dim + 1:]))
            continue
        span = (count - 1) * down + 1
        lo, hi = max(0, -min(d for _, d in terms)), max(0, max(d for _, d in terms) + span - n)
        xp = F.pad(x, [0, 0] * (x.ndim - 1 - dim) + [lo, hi]) if lo or hi else x
        out = None
        for t, d in terms:
            piece = xp.narrow(dim, d + lo, span)[(slice(None),) * dim + (slice(None, None, down),)]
            out = piece * t if out is None else out.add_(piece, alpha=t)
        phases.append(out)
    if up == 1:
        return phases[0]
    pad = [0, 0] * (x.ndim - 1 - dim)
    y = torch.stack([F.pad(p, pad + [0, phases[0].shape[dim] - p.shape[dim]]) for p in phases], dim=dim + 1)
    return y.reshape(*x.shape[:dim], -1, *x.shape[dim + 1:]).narrow(dim, 0, n_out)


def _add_bias(x: torch.Tensor, bias: Optional[torch.Tensor]) -> torch.Tensor:
    if bias is None:
        return x
    return x + bias.to(x.dtype).reshape(1, -1, 1, 1)



def _is_channels_last(x: torch.Tensor) -> bool:
    return x.ndim == 4 and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()


def _upfirdn2d_channels_last(x, f, up, down, pads, gain, bias=None) -> Optional[torch.Tensor]:
    """The common StyleGAN2 cases as single oneDNN calls that keep the channels-last layout.

    - no upsampling, symmetric padding: one depthwise convolution with that padding (and stride = down);
    - upsampling by 2 with padding (p+1, p): a depthwise *transposed* convolution with the filter, which
      is zero insertion followed by a true convolution, cropped by its ``padding`` argument.
    Same sums as the generic path in a different order (float rounding only). None: not applicable.
    """
    px0, px1, py0, py1 = pads
    c = x.shape[1]
    fk = (f * (gain ** (f.ndim / 2))).to(x.dtype)
    kh, kw = fk.shape
    if bias is not None:
        bias = bias.to(x.dtype)
    if up == 1 and px0 == px1 >= 0 and py0 == py1 >= 0:
        weight = fk.flip([0, 1])[None, None].repeat(c, 1, 1, 1)
        return F.conv2d(x, weight, bias, padding=(py0, px0), stride=down, groups=c)
    if up == 2 and down == 1 and px0 == px1 + 1 and py0 == py1 + 1:
        qx, qy = kw - 1 - px0, kh - 1 - py0
        if qx >= 0 and qy >= 0:
            weight = fk[None, None].repeat(c, 1, 1, 1)
            return F.conv_transpose2d(x, weight, bias, stride=2, padding=(qy, qx), groups=c)
    return None


def upsample2d(x: torch.Tensor, f: torch.Tensor, up: int = 2) -> torch.Tensor:
    """Upsample [N,C,H,W] by ``up`` with filter ``f`` (StyleGAN2's image-skip upsampling)."""
    fw = f.shape[-1]
    p = [(fw + up - 1) // 2, (fw - up) // 2]
    return upfirdn2d(x, f, up=up, padding=(p[0], p[1], p[0], p[1]), gain=up * up)


def downsample2d(x: torch.Tensor, f: torch.Tensor, down: int = 2, padding: int = 0,
                 flip_filter: bool = False) -> torch.Tensor:
    """Downsample [N,C,H,W] by ``down`` with filter ``f``, padded (negative: cropped) by ``padding`` more per side."""
    fw = f.shape[-1]
    p = [padding + (fw - down + 1) // 2, padding + (fw - down) // 2]
    return upfirdn2d(x, f, down=down, padding=(p[0], p[1], p[0], p[1]), flip_filter=flip_filter)


# ----------------------------------------------------------------------------------------------------------
# Convolution with optional FIR up/downsampling.


# Inputs with at most this many pixels run 3x3 convolutions as plain matrix products (unfold/fold) when no
# gradient is needed: at 4x4..16x16 the weights dominate, and oneDNN would re-layout them on every call.
MATMUL_MAX_PIXELS = 256


class WeightLayouts:
    """Per-layer cache of weight layouts derived from a parameter, re-derived whenever the weight changes
    (another tensor object, new storage, in-place update, other device or dtype).

    The cache holds a reference to the tensor it was filled from: a temporary (e.g. a weight cast to fp16 on
    every call) therefore never shares an address with the next call's temporary, so it can never be
    mistaken for it; such temporaries simply miss every time."""

    def __init__(self):
        self._tensor: Optional[torch.Tensor] = None
        self._key = None
        self._store: dict = {}

    def get(self, w: torch.Tensor, name: str, fn):
        # (inference-mode results cannot be saved for backward, so they are kept apart from the others)
        key = (w.data_ptr(), w._version, w.device, w.dtype, tuple(w.shape), torch.is_inference_mode_enabled())
        store = self._store
        if w is not self._tensor or key != self._key:
            store = {}
            self._tensor, self._key, self._store = w, key, store
        if name not in store:
            store[name] = fn(w)
        return store[name]  # (a local store: another thread swapping in a new one cannot lose this entry)


def _matmul_conv_ok(x: torch.Tensor, w: torch.Tensor, groups: int, layouts) -> bool:
    return (
        layouts is not None and groups == 1 and w.shape[2] == w.shape[3] and w.shape[2] > 1
        and x.shape[2] * x.shape[3] <= MATMUL_MAX_PIXELS and x.device.type == "cpu"
        and not (torch.is_grad_enabled() and (x.requires_grad or w.requires_grad))
    )


# Transposed convolutions whose input has at least this many pixels take the pre-padded form on CPU.
PREPAD_MIN_PIXELS = 128 * 128

# 3x3 stride-1 convolutions with shared weights run as Winograd convolutions on CPU for inputs from 8x8 to
# WINOGRAD_MAX_PIXELS with at least WINOGRAD_MIN_CHANNELS input channels: F(4x4, 3x3) from WINOGRAD4_MIN_PIXELS
# to WINOGRAD4_MAX_PIXELS, F(2x2, 3x3) elsewhere. Measured on 2 AVX2 cores, batch 1, against oneDNN (ms):
#   16 px / 512 ch: direct 11.6-13.3, F(2x2) 6.0-6.4, F(4x4) 5.6-5.9    64 px / 256 ch: 30.3, 17.9-23.9, 15.3-15.7
#   32 px / 512 ch: direct 33.7-35.1, F(2x2) 15.9-16.6, F(4x4) 13.0-13.3  128 px / 128 ch: 31.5-31.7, 29-33, 21.8-22.4
# At 8 px F(2x2) wins (F(4x4)'s kernels are 4x the size of the 3x3 ones, and reading them dominates); at 256 px
# with 64 channels the direct convolution wins (the transforms are bound by memory traffic).
WINOGRAD_MAX_PIXELS = 128 * 128
WINOGRAD_MIN_CHANNELS = 128
WINOGRAD4_MIN_PIXELS = 16 * 16
WINOGRAD4_MAX_PIXELS = 128 * 128

# Winograd F(2x2, 3x3) transforms (Lavin & Gray 2016): Y = A^T [(G g G^T) * (B^T d B)] A on 4x4 input tiles.
_WINO_G = ((1.0, 0.0, 0.0), (0.5, 0.5, 0.5), (0.5, -0.5, 0.5), (0.0, 0.0, 1.0))

# F(4x4, 3x3) on 6x6 tiles, interpolation points 0, +-1, +-2 and infinity (Lavin & Gray 2016, section 4.2).
_WINO4_G = ((1 / 4, 0, 0), (-1 / 6, -1 / 6, -1 / 6), (-1 / 6, 1 / 6, -1 / 6), (1 / 24, 1 / 12, 1 / 6),
            (1 / 24, -1 / 12, 1 / 6), (0, 0, 1))
_WINO4_BT = ((4, 0, -5, 0, 1, 0), (0, -4, -4, 1, 1, 0), (0, 4, -4, -1, 1, 0), (0, -2, -1, 2, 1, 0),
             (0, 2, -1, -2, 1, 0), (0, 4, 0, -5, 0, 1))
_WINO4_AT = ((1, 1, 1, 1, 1, 0), (0, 1, -1, 2, -2, 0), (0, 1, 1, 4, 4, 0), (0, 1, -1, 8, -8, 1))
_WINO4_MATS: dict = {}


def winograd_weights(w: torch.Tensor, tile: int = 2) -> torch.Tensor:
    """[O, I, 3, 3] kernel (cross-correlation, as F.conv2d) -> transformed kernel G w G^T for output tiles of
    ``tile`` x ``tile`` pixels: [16, I, O] for F(2x2, 3x3), [36, I, O] for F(4x4, 3x3).

    Computed as two matrix products over the kernel taps, in the kernel's own dtype, straight into the
    [tap, I, O] layout (an einsum over a float64 copy took ~120 ms per 512x512 kernel, which every process
    paid on its first image; this takes ~9 ms and differs from the float64 result by at most 1 ulp)."""
    if tile not in (2, 4):
        raise ValueError(f"Winograd tiles of 2 or 4 pixels, not {tile}")
    g = torch.tensor(_WINO4_G if tile == 4 else _WINO_G, dtype=w.dtype, device=w.device)  # [t, 3]
    t = g.shape[0]
    o, i = w.shape[0], w.shape[1]
    taps = w.permute(2, 3, 1, 0).reshape(3, 3 * i * o)  # [k, (l, I, O)]
    rows = torch.mm(g, taps).view(t, 3, i * o)  # G along kernel rows: [t, l, (I, O)]
    return torch.matmul(g, rows).reshape(t * t, i, o)  # G along kernel columns: [t, t, (I, O)]


def winograd_conv3x3(x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """F.conv2d(x, w, padding=1) given ``u = winograd_weights(w, tile)``, for H and W divisible by the tile
    size; channels-last result.

    The tile positions become one batched matrix product [16 or 36, tiles, I] @ [.., I, O]: 2.25x (F(2x2))
    or 4x (F(4x4)) fewer multiplications than the direct convolution. F(2x2)'s transforms only add and
    subtract (exact in binary except the 0.5 factors of G), so results differ from oneDNN's by float rounding
    (~1e-6 relative); F(4x4)'s larger transform coefficients give ~1e-5 relative.
    """
    if u.shape[0] == 36:
        return _winograd4_conv3x3(x, u)
    n, c, h, w = x.shape
    o = u.shape[2]
    th, tw = h // 2, w // 2
    xl = F.pad(x, [1, 1, 1, 1]).permute(0, 2, 3, 1)  # [N, H+2, W+2, I], contiguous for channels-last x
    rows = [xl[:, i: i + 2 * th: 2] for i in range(4)]  # row i of every tile: [N, th, W+2, I]
    v = x.new_empty((16, n, th, tw, c))
    for i, r in enumerate((rows[0] - rows[2], rows[1] + rows[2], rows[2] - rows[1], rows[1] - rows[3])):
        cols = [r[:, :, j: j + 2 * tw: 2] for j in range(4)]
        torch.sub(cols[0], cols[2], out=v[4 * i])
        torch.add(cols[1], cols[2], out=v[4 * i + 1])
        torch.sub(cols[2], cols[1], out=v[4 * i + 2])
        torch.sub(cols[1], cols[3], out=v[4 * i + 3])
    m = torch.bmm(v.reshape(16, -1, c), u.to(x.dtype)).reshape(4, 4, n, th, tw, o)
    s0, s1 = m[0] + m[1] + m[2], m[1] - m[2] - m[3]  # A^T along tile rows: [4, N, th, tw, O] each
    y = torch.empty((n, o, h, w), dtype=x.dtype, device=x.device, memory_format=torch.channels_last)  # not a view
    tiles = y.permute(0, 2, 3, 1).view(n, th, 2, tw, 2, o)
    for a, s in enumerate((s0, s1)):
        torch.add(s[0] + s[1], s[2], out=tiles[:, :, a, :, 0])
        torch.sub(s[1] - s[2], s[3], out=tiles[:, :, a, :, 1])
    return y


def _winograd4_mats(dtype: torch.dtype, device: torch.device):
    key = (dtype, device)
    if key not in _WINO4_MATS:
        _WINO4_MATS[key] = (torch.tensor(_WINO4_BT, dtype=dtype, device=device),
                            torch.tensor(_WINO4_AT, dtype=dtype, device=device))
    return _WINO4_MATS[key]


def _winograd4_conv3x3(x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    n, c, h, w = x.shape
    o = u.shape[2]
    th, tw = h // 4, w // 4
    bt, at = _winograd4_mats(x.dtype, x.device)
    xl = F.pad(x, [1, 1, 1, 1]).permute(0, 2, 3, 1)
    if not xl.is_contiguous():
        xl = xl.contiguous()
    s_n, s_h, s_w, s_c = xl.stride()
    # the 6x6 input tiles (overlapping by 2) gathered as [6 rows, 6 cols * N * th * tw * I]
    d = xl.as_strided((6, 6, n, th, tw, c), (s_h, s_w, s_n, 4 * s_h, 4 * s_w, s_c)).reshape(6, -1)
    # B^T d B one dimension at a time (two passes with 6x6 matrices, not one 36x36 product: 6x fewer
    # multiplications, and these passes are bound by memory traffic, not arithmetic)
    v = torch.matmul(bt, torch.mm(bt, d).view(6, 6, -1)).view(36, n * th * tw, c)
    m = torch.bmm(v, u.to(x.dtype))  # [36, tiles, O]
    yt = torch.matmul(at, torch.mm(at, m.view(6, -1)).view(4, 6, -1)).view(4, 4, n, th, tw, o)
    y = torch.empty((n, o, h, w), dtype=x.dtype, device=x.device, memory_format=torch.channels_last)
    y.permute(0, 2, 3, 1).view(n, th, 4, tw, 4, o).copy_(yt.permute(2, 3, 0, 4, 1, 5))
    return y


class _WinogradConv3x3(torch.autograd.Function):
    """Input gradients through the Winograd convolution (kernel frozen): the gradient of a 3x3 stride-1
    pad-1 convolution is the same convolution with the kernel flipped and its channels swapped."""

    @staticmethod
    def forward(ctx, x, u, u_back):
        ctx.save_for_backward(u_back)
        return winograd_conv3x3(x, u)

    @staticmethod
    def backward(ctx, grad):
        (u_back,) = ctx.saved_tensors
        return winograd_conv3x3(grad, u_back), None, None


def _winograd_back_weights(w: torch.Tensor, tile: int = 2) -> torch.Tensor:
    return winograd_weights(w.flip([2, 3]).transpose(0, 1), tile)


def _winograd_tile(x: torch.Tensor) -> int:
    h, w = x.shape[2], x.shape[3]
    return 4 if (h % 4 == 0 and w % 4 == 0 and WINOGRAD4_MIN_PIXELS <= h * w <= WINOGRAD4_MAX_PIXELS) else 2


def _winograd(x: torch.Tensor, w: torch.Tensor, layouts: WeightLayouts) -> torch.Tensor:
    tile = _winograd_tile(x)
    u = layouts.get(w, f"winograd{tile}", lambda t: winograd_weights(t, tile))
    if torch.is_grad_enabled() and x.requires_grad:
        back = layouts.get(w, f"winograd{tile}_back", lambda t: _winograd_back_weights(t, tile))
        return _WinogradConv3x3.apply(x, u, back)
    return winograd_conv3x3(x, u)


def _winograd_ok(x: torch.Tensor, w: torch.Tensor, groups: int, layouts, padding: int) -> bool:
    h, wd = x.shape[2], x.shape[3]
    return (
        layouts is not None and groups == 1 and tuple(w.shape[2:]) == (3, 3) and padding == 1
        and x.device.type == "cpu" and x.dtype == torch.float32 and h % 2 == 0 and wd % 2 == 0
        and h >= 8 and wd >= 8 and h * wd <= WINOGRAD_MAX_PIXELS and w.shape[1] >= WINOGRAD_MIN_CHANNELS
        and not (torch.is_grad_enabled() and w.requires_grad)
    )


def _prepad_ok(x: torch.Tensor, px0: int, px1: int, py0: int, py1: int) -> bool:
    return (
        x.device.type == "cpu" and px0 == px1 == py0 == py1 >= 0
        and x.shape[2] * x.shape[3] >= PREPAD_MIN_PIXELS
    )


def _kernel_for(x: torch.Tensor, w: torch.Tensor, layouts: Optional[WeightLayouts], transposed: bool = False):
    """The kernel to hand to F.conv2d / F.conv_transpose2d (transposed: [I, O, kh, kw]). A frozen kernel is
    stored once in the memory format of ``x``: torch would otherwise copy it into that layout on every call
    (and again in backward), ~3 ms per 512x512 3x3 kernel."""
    if layouts is None or (torch.is_grad_enabled() and w.requires_grad) or w.device != x.device:
        return w.transpose(0, 1) if transposed else w
    fmt = torch.channels_last if _is_channels_last(x) else torch.contiguous_format
    name = ("transposed_" if transposed else "kernel_") + str(fmt)
    return layouts.get(w, name, lambda t: (t.transpose(0, 1) if transposed else t).contiguous(memory_format=fmt))


def conv2d_resample(
    x: torch.Tensor,
    w: torch.Tensor,
    f: Optional[torch.Tensor] = None,
    up: int = 1,
    down: int = 1,
    padding: int = 0,
    groups: int = 1,
    layouts: Optional[WeightLayouts] = None,
    bias: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """2-D convolution (correlation, as torch does) of ``x`` with ``w`` [O, I/groups, kh, kw], with the
    resampling StyleGAN2 uses around it, plus ``bias`` [O] (added by the last convolution call).

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
        return F.conv2d(x, _kernel_for(x, w, layouts), bias, groups=groups)
    if kw == 1 and kh == 1 and up > 1 and down == 1:
        x = F.conv2d(x, _kernel_for(x, w, layouts), groups=groups)
        return upfirdn2d(x, f, up=up, padding=(px0, px1, py0, py1), gain=up * up, bias=bias)
    if down > 1 and up == 1:
        x = upfirdn2d(x, f, padding=(px0, px1, py0, py1))
        return F.conv2d(x, _kernel_for(x, w, layouts), bias, stride=down, groups=groups)
    if up > 1:
        if groups == 1:
            wt = _kernel_for(x, w, layouts, transposed=True)
        else:
            wt = w.reshape(groups, out_ch // groups, in_per_group, kh, kw).transpose(1, 2)
            wt = wt.reshape(groups * in_per_group, out_ch // groups, kh, kw)
        px0 -= kw - 1
        px1 -= kw - up
        py0 -= kh - 1
        py1 -= kh - up
        pxt = max(min(-px0, -px1), 0)
        pyt = max(min(-py0, -py1), 0)
        if pxt == 0 and pyt == 0 and _matmul_conv_ok(x, w, groups, layouts):
            # transposed conv = (weights x pixels) matrix product, then overlap-add of the kh x kw patches
            n, c, h, wd = x.shape
            wm = layouts.get(w, "transposed_mm", lambda t: t.permute(0, 2, 3, 1).reshape(-1, t.shape[1]).contiguous())
            cols = torch.matmul(wm, x.reshape(n, c, h * wd))
            x = F.fold(cols, ((h - 1) * up + kh, (wd - 1) * up + kw), (kh, kw), stride=up)
        elif _prepad_ok(x, px0, px1, py0, py1):
            # Same sums, different call: zero-pad the input by q and crop q*up-p from the transposed conv's
            # output, so the FIR needs no padding. oneDNN (torch 2.13) runs a padded stride-2 transposed conv
            # with its faster brgemm kernel; unpadded large ones got a kernel 1.5-2x slower at >=128 px input.
            q = -(-(px0 + 1) // up)
            x = F.conv_transpose2d(F.pad(x, [q, q, q, q]), wt, stride=up, padding=q * up - px0, groups=groups)
            pxt = pyt = -px0
        else:
            x = F.conv_transpose2d(x, wt, stride=up, padding=[pyt, pxt], groups=groups)
        pads = (px0 + pxt, px1 + pxt, py0 + pyt, py1 + pyt)
        if down > 1:
            return upfirdn2d(upfirdn2d(x, f, padding=pads, gain=up * up), f, down=down, bias=bias)
        return upfirdn2d(x, f, padding=pads, gain=up * up, bias=bias)
    if px0 == px1 and py0 == py1 and px0 >= 0 and py0 >= 0:
        if px0 == py0 and _winograd_ok(x, w, groups, layouts, px0):
            return _add_bias(_winograd(x, w, layouts), bias)
        if px0 == py0 and _matmul_conv_ok(x, w, groups, layouts):
            n, _, h, wd = x.shape
            cols = F.unfold(x, (kh, kw), padding=px0)  # [N, I*kh*kw, H'*W']
            out = torch.matmul(w.reshape(out_ch, -1), cols)
            return _add_bias(out.reshape(n, out_ch, h + 2 * px0 - kh + 1, wd + 2 * px0 - kw + 1), bias)
        return F.conv2d(x, _kernel_for(x, w, layouts), bias, padding=[py0, px0], groups=groups)
    x = upfirdn2d(x, f if f is not None else setup_filter([1]), padding=(px0, px1, py0, py1))
    return F.conv2d(x, _kernel_for(x, w, layouts), bias, groups=groups)


def _add_bias_to_scratch(x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """In place, also under autograd: ``x`` is a fresh product/sum no backward formula saved."""
    return x.add_(bias.to(x.dtype).reshape(1, -1, 1, 1))


def _sq_sum(w: torch.Tensor) -> torch.Tensor:
    return w.square().sum(dim=[2, 3])


def modulated_conv2d(
    x: torch.Tensor,
    weight: torch.Tensor,
    styles: torch.Tensor,
    noise: Optional[torch.Tensor] = None,
    up: int = 1,
    padding: int = 0,
    resample_filter: Optional[torch.Tensor] = None,
    demodulate: bool = True,
    fused: Optional[bool] = True,
    layouts: Optional[WeightLayouts] = None,
    out_scale: float = 1.0,
    bias: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """StyleGAN2's modulated convolution: scale the kernel's input channels by per-sample ``styles``,
    optionally demodulate (normalise each output filter to unit norm), convolve, then add ``noise``.

    ``out_scale`` and ``bias`` [O] give ``(conv + noise) * out_scale + bias`` without extra passes over the
    output: the scale goes into the demodulation coefficients (or kernels) and the noise, the bias into the
    convolution call where the layout allows (fp32 only; fp16 keeps the official op order exactly).

    ``fused=True`` builds per-sample kernels and runs one grouped convolution; ``fused=False`` scales
    activations before and after a shared convolution; ``None`` picks the cheaper one for the shapes.
    Both compute the same function. In fp16 the kernel and styles are pre-normalised to avoid overflow,
    as the official mixed-precision path does.
    """
    n = x.shape[0]
    out_ch, in_ch, kh, kw = weight.shape
    if fused is None:
        # Per-sample kernels only pay off for one sample whose kernel is smaller than its activations
        # (the high resolutions); elsewhere scaling the activations around a shared kernel is cheaper.
        fused = n == 1 and weight.numel() < x[0].numel() and not (
            up == 1 and _winograd_ok(x, weight, 1, layouts, padding))  # Winograd needs the shared kernel
    if x.dtype == torch.float16 and (out_scale != 1 or bias is not None):
        raise ValueError("out_scale and bias are fp32-only (fp16 follows the official op order)")
    if out_scale != 1 and noise is not None:
        noise = noise * out_scale
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
            wsq = (layouts.get(weight, "sq_sum", _sq_sum) if layouts is not None and not weight.requires_grad
                   else _sq_sum(weight))  # [O, I]
            dcoefs = (styles.square() @ wsq.t() + 1e-8).rsqrt()  # [N, O]
        if out_scale != 1:
            dcoefs = dcoefs * out_scale if demodulate else torch.full_like(styles[:, :1], out_scale)
        x = x * styles.to(x.dtype).reshape(n, -1, 1, 1)
        x = conv2d_resample(x, weight.to(x.dtype), f=resample_filter, up=up, padding=padding, layouts=layouts)
        if dcoefs is not None and noise is not None:
            x = torch.addcmul(noise.to(x.dtype), x, dcoefs.to(x.dtype).reshape(n, -1, 1, 1))
        elif dcoefs is not None:
            x = x * dcoefs.to(x.dtype).reshape(n, -1, 1, 1)
        elif noise is not None:
            x = x + noise.to(x.dtype)
        if bias is not None:
            x = _add_bias_to_scratch(x, bias)
        return x

    w = weight.unsqueeze(0) * styles.reshape(n, 1, -1, 1, 1)  # [N, O, I, kh, kw]
    if demodulate:
        dcoefs = (w.square().sum(dim=[2, 3, 4]) + 1e-8).rsqrt()
        w = w * (dcoefs * out_scale if out_scale != 1 else dcoefs).reshape(n, -1, 1, 1, 1)
    elif out_scale != 1:
        w = w * out_scale
    w = w.reshape(-1, in_ch, kh, kw)
    b = None
    if bias is not None:
        b = bias.to(x.dtype) if n == 1 else bias.to(x.dtype).repeat(n)
    if n == 1:  # (reshaping would drop a channels-last layout and slow every later op)
        x = conv2d_resample(x, w.to(x.dtype), f=resample_filter, up=up, padding=padding, bias=b)
    else:
        x = x.reshape(1, -1, *x.shape[2:])
        x = conv2d_resample(x, w.to(x.dtype), f=resample_filter, up=up, padding=padding, groups=n, bias=b)
        x = x.reshape(n, -1, *x.shape[2:])
    if noise is not None:
        if x.dtype != noise.dtype:
            # add in the noise's precision and round once to x's dtype (what an in-place add into fp16 does)
            x = (x.to(noise.dtype) + noise).to(x.dtype)
        elif torch.is_grad_enabled() and (x.requires_grad or noise.requires_grad):
            x = x + noise
        else:
            x = x.add_(noise)  # in place: keeps x's memory layout and saves a copy
    return x
