"""The official StyleGAN2-ADA projector, in W and W+, for several targets in one batched call.

:func:`project` optimises latents (and the synthesis noise maps) so that ``G.synthesis`` reproduces each
target under a perceptual :class:`~styleforge.perceptual.features.FeatureNet`. With ``space='w'`` and the
defaults it is the official algorithm step for step:

- W statistics from 10,000 samples ``z = RandomState(123).randn(10000, z_dim)`` mapped without truncation
  (:func:`compute_w_stats`); the start is ``w_avg``;
- every ``noise_const`` map is reset to ``randn`` and optimised too, and renormalised to zero mean and unit
  RMS after every step; the regulariser sums, over every map and each level of its 2x2-average pyramid
  (down to 8x8), the squared mean product with the map rolled by one pixel, horizontally and vertically,
  weighted 1e5;
- Adam (betas 0.9, 0.999) with lr 0.1 times a ramp (linear up over the first 5 %, cosine down over the
  last 25 %; zero at step 0), and exploration noise ``w_std * 0.05 * max(0, 1 - t/0.75)^2`` added to w;
- the synthesised image in [0, 255] is compared with the target by the sum of squared feature differences.

``space='w+'`` optimises one w per synthesis layer ([num_ws, w_dim], starting from ``w_avg`` everywhere).

Several targets are optimised together as one batch, but every target has its own torch RNG stream seeded
with its seed (the noise-map initialisation, then the exploration noise of each step, drawn in the official
order), the loss is a sum of per-target terms and Adam is element-wise: a target's result does not depend
on which other targets share the call (bit for bit at batch size 1; within float rounding of the batched
convolutions otherwise). On CPU the random draws equal the official ``torch.manual_seed(seed)`` sequence.

Only input gradients are computed: the generator and the feature network are frozen for the call.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field, replace
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import StyleforgeError
from ..images import to_image_range
from ..perceptual.features import FeatureNet

SPACES = ("w", "w+")


@dataclass(frozen=True)
class ProjectorConfig:
    """Hyper-parameters; the defaults are the official ones."""

    num_steps: int = 1000
    space: str = "w"  # 'w' (official) or 'w+' (one w per layer)
    w_avg_samples: int = 10000
    w_avg_seed: int = 123
    initial_learning_rate: float = 0.1
    initial_noise_factor: float = 0.05
    lr_rampdown_length: float = 0.25
    lr_rampup_length: float = 0.05
    noise_ramp_length: float = 0.75
    regularize_noise_weight: float = 1e5
    optimize_noise: bool = True
    # Modulated-conv formulation while optimising. False (scale activations around the shared, frozen kernel)
    # needs only input gradients from every convolution; the fused per-sample kernels (what None picks for
    # one sample at high resolution) would also need a kernel gradient. Same function, ~2x faster on CPU.
    fused_modconv: Optional[bool] = False

    def validate(self) -> None:
        if self.space not in SPACES:
            raise StyleforgeError("use w or w+", param="space", value=repr(self.space))
        if self.num_steps < 1:
            raise StyleforgeError("must be at least 1", param="num_steps", label="number of steps",
                                  value=self.num_steps)


def learning_rate(step: int, cfg: ProjectorConfig) -> float:
    """lr at ``step``: the official ramp (0 at step 0, full after 5 %, cosine to 0 over the last 25 %)."""
    t = step / cfg.num_steps
    ramp = min(1.0, (1.0 - t) / cfg.lr_rampdown_length)
    ramp = 0.5 - 0.5 * math.cos(ramp * math.pi)
    ramp = ramp * min(1.0, t / cfg.lr_rampup_length)
    return cfg.initial_learning_rate * ramp


def w_noise_scale(step: int, w_std: float, cfg: ProjectorConfig) -> float:
    """Std of the exploration noise added to w at ``step``."""
    t = step / cfg.num_steps
    return w_std * cfg.initial_noise_factor * max(0.0, 1.0 - t / cfg.noise_ramp_length) ** 2


@dataclass
class WStats:
    """Centre and spread of W: ``w_avg`` [w_dim] (float32) and the scalar ``w_std``."""

    w_avg: torch.Tensor
    w_std: float
    seconds: float = 0.0


def compute_w_stats(G: nn.Module, num_samples: int = 10000, seed: int = 123, chunk: int = 1000) -> WStats:
    """The official projector's W statistics: map ``RandomState(seed).randn(num_samples, z_dim)`` with no
    truncation, keep the first w of each, ``w_avg`` = their mean, ``w_std`` = sqrt(sum |w - w_avg|^2 / N)."""
    check_projectable(G)
    t0 = time.perf_counter()
    dev = _device_of(G)
    z = np.random.RandomState(seed).randn(num_samples, G.z_dim)
    rows = []
    with torch.no_grad():
        for i in range(0, num_samples, chunk):
            zz = torch.from_numpy(z[i: i + chunk]).to(dev)
            rows.append(G.mapping(zz, None, update_w_avg=False)[:, 0].cpu().numpy().astype(np.float32))
    w = np.concatenate(rows)[:, None, :]  # [N, 1, C]
    w_avg = np.mean(w, axis=0, keepdims=True)
    w_std = float((np.sum((w - w_avg) ** 2) / num_samples) ** 0.5)
    return WStats(torch.from_numpy(w_avg.reshape(-1).copy()), w_std, time.perf_counter() - t0)


def check_projectable(G: nn.Module) -> None:
    if not getattr(G, "has_w_space", False) or not hasattr(G, "synthesis"):
        raise StyleforgeError("projection needs a StyleGAN generator with a W space (mapping + synthesis)")
    if getattr(G, "c_dim", 0):
        raise StyleforgeError(
            f"projection of conditional networks is not supported (this one has {G.c_dim} classes), "
            "as in the official projector"
        )


def _device_of(module: nn.Module) -> torch.device:
    for t in module.parameters():
        return t.device
    for t in module.buffers():
        return t.device
    return torch.device("cpu")


def noise_buffers(G: nn.Module) -> Dict[str, torch.Tensor]:
    """Every synthesis buffer whose name contains ``noise_const`` (the official selection), in module order."""
    return {name: buf for name, buf in G.synthesis.named_buffers() if "noise_const" in name}


@contextlib.contextmanager
def override_noise(G: nn.Module, noise: Dict[str, torch.Tensor]) -> Iterator[None]:
    """Temporarily replace ``G.synthesis``'s noise_const buffers (e.g. by per-sample maps [N, 1, H, W],
    which broadcast over the batch); the originals are put back afterwards."""
    saved = {}
    try:
        for name, t in noise.items():
            path, attr = name.rsplit(".", 1)
            mod = G.synthesis.get_submodule(path)
            saved[name] = (mod, attr, getattr(mod, attr))
            setattr(mod, attr, t)
        yield
    finally:
        for mod, attr, old in saved.values():
            setattr(mod, attr, old)


@contextlib.contextmanager
def frozen(*modules: nn.Module) -> Iterator[None]:
    """Turn off gradients for every parameter of ``modules`` and restore the previous flags afterwards."""
    flags = []
    for m in modules:
        for p in m.parameters():
            flags.append((p, p.requires_grad))
            p.requires_grad_(False)
    try:
        yield
    finally:
        for p, f in flags:
            p.requires_grad_(f)


def noise_regularizer(noises: Sequence[torch.Tensor]) -> torch.Tensor:
    """Per-sample noise regulariser [N] of maps [N, 1, H, W] (the official pyramid of roll correlations).

    Maps of the same size go through the pyramid together (as channels of one tensor): the same sum, in
    half the operations for the generators' two maps per resolution."""
    groups: Dict[tuple, List[torch.Tensor]] = {}
    for v in noises:
        groups.setdefault(tuple(v.shape), []).append(v)
    reg = 0.0
    for same in groups.values():
        x = same[0] if len(same) == 1 else torch.cat(same, dim=1)  # [N, maps, H, W]
        while True:
            reg = reg + (x * torch.roll(x, shifts=1, dims=3)).mean(dim=[2, 3]).square().sum(dim=1)
            reg = reg + (x * torch.roll(x, shifts=1, dims=2)).mean(dim=[2, 3]).square().sum(dim=1)
            if x.shape[2] <= 8:
                break
            x = F.avg_pool2d(x, kernel_size=2)
    return reg


@dataclass
class ProjectionResult:
    """Output of :func:`project` for N targets.

    - ``w``: final latents [N, num_ws, w_dim] (W projections have identical rows);
    - ``w_steps``: if requested, the latent after every step, [N, num_steps, num_ws, w_dim];
    - ``noise``: the optimised noise maps, buffer name -> [N, H, W];
    - ``dist``: the feature distance at the last step [N] (with that step's exploration noise);
    - ``seconds``: wall time of the optimisation loop; ``stats``: the W statistics used.
    """

    w: torch.Tensor
    w_steps: Optional[torch.Tensor]
    noise: Dict[str, torch.Tensor]
    dist: torch.Tensor
    seconds: float
    num_steps: int
    space: str
    seeds: List[int]
    stats: WStats
    step_seconds: List[float] = field(default_factory=list)


StepCallback = Callable[[int, int, torch.Tensor], None]


def prepare_targets(G: nn.Module, targets: Union[torch.Tensor, np.ndarray]) -> torch.Tensor:
    """Targets as float32 [N, C, H, W] in [0, 255]; accepts [C, H, W], [N, C, H, W] or HWC/NHWC uint8 arrays."""
    t = torch.as_tensor(np.asarray(targets) if isinstance(targets, np.ndarray) else targets)
    if t.ndim == 3:
        t = t[None]
    if t.ndim != 4:
        raise StyleforgeError(f"targets must be images [N, C, H, W], got shape {list(t.shape)}")
    c, r = G.img_channels, G.img_resolution
    if t.shape[1] not in (c,) and t.shape[-1] == c and t.shape[1] == r:
        t = t.permute(0, 3, 1, 2)  # NHWC -> NCHW
    if t.shape[1] != c:
        raise StyleforgeError(f"targets have {t.shape[1]} channels, the network makes {c}-channel images")
    if tuple(t.shape[2:]) != (r, r):
        raise StyleforgeError(f"targets are {t.shape[3]}x{t.shape[2]}, the network makes {r}x{r} images; resize them first")
    return t.to(torch.float32)


def project(
    G: nn.Module,
    targets: Union[torch.Tensor, np.ndarray],
    feature_net: FeatureNet,
    *,
    seeds: Union[int, Sequence[int]] = 303,
    num_steps: Optional[int] = None,
    space: Optional[str] = None,
    config: Optional[ProjectorConfig] = None,
    stats: Optional[WStats] = None,
    keep_steps: bool = False,
    callback: Optional[StepCallback] = None,
) -> ProjectionResult:
    """Project ``targets`` ([N, C, H, W] in [0, 255] at G's resolution) into G's W or W+ space.

    ``seeds``: one seed for all targets (each still gets its own stream) or one per target. ``stats``:
    precomputed :func:`compute_w_stats` (computed here if None). ``callback(step, num_steps, dist)`` is called
    after every step. The caller's G is left as it was (its noise buffers and requires_grad flags are restored).
    """
    cfg = config or ProjectorConfig()
    if num_steps is not None or space is not None:
        cfg = replace(cfg, num_steps=cfg.num_steps if num_steps is None else int(num_steps),
                      space=cfg.space if space is None else space)
    cfg.validate()
    check_projectable(G)
    dev = _device_of(G)
    target = prepare_targets(G, targets).to(dev)
    n = target.shape[0]
    seed_list = [int(seeds)] * n if isinstance(seeds, (int, np.integer)) else [int(s) for s in seeds]
    if len(seed_list) != n:
        raise StyleforgeError(f"got {len(seed_list)} seeds for {n} targets")
    gens = [torch.Generator().manual_seed(s) for s in seed_list]
    if stats is None:
        stats = compute_w_stats(G, cfg.w_avg_samples, cfg.w_avg_seed)
    num_ws, w_dim = G.num_ws, G.w_dim
    k = 1 if cfg.space == "w" else num_ws

    # Noise maps: per target, randn in buffer order from the target's own stream (the official order).
    bufs = noise_buffers(G)
    noise: Dict[str, torch.Tensor] = {}
    if cfg.optimize_noise:
        per_target = [[torch.randn(b.shape, generator=g) for b in bufs.values()] for g in gens]
        for j, name in enumerate(bufs):
            noise[name] = torch.stack([per_target[i][j] for i in range(n)])[:, None].to(dev).requires_grad_(True)
    w_opt = stats.w_avg.to(dev, torch.float32).reshape(1, 1, w_dim).repeat(n, k, 1).requires_grad_(True)
    opt = torch.optim.Adam([w_opt] + list(noise.values()), betas=(0.9, 0.999), lr=cfg.initial_learning_rate)

    steps_out: Optional[List[torch.Tensor]] = [] if keep_steps else None
    step_times: List[float] = []
    dist = torch.zeros(n)
    t_start = time.perf_counter()
    with frozen(G, feature_net), override_noise(G, noise):
        with torch.no_grad():
            target_feats = feature_net(target)
        for step in range(cfg.num_steps):
            t0 = time.perf_counter()
            lr = learning_rate(step, cfg)
            for group in opt.param_groups:
                group["lr"] = lr
            scale = w_noise_scale(step, stats.w_std, cfg)
            w_noise = torch.stack([torch.randn([k, w_dim], generator=g) for g in gens]).to(dev) * scale
            ws = (w_opt + w_noise)
            if k == 1:
                ws = ws.repeat(1, num_ws, 1)
            synth = to_image_range(G.synthesis(ws, noise_mode="const", fused_modconv=cfg.fused_modconv))
            d = feature_net.distance(feature_net(synth), target_feats)
            loss = d.sum()
            if noise:
                loss = loss + cfg.regularize_noise_weight * noise_regularizer(list(noise.values())).sum()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            with torch.no_grad():
                if steps_out is not None:
                    steps_out.append(w_opt.detach().cpu().clone())
                for v in noise.values():  # zero mean, unit RMS per target and map
                    v -= v.mean(dim=[1, 2, 3], keepdim=True)
                    v *= v.square().mean(dim=[1, 2, 3], keepdim=True).rsqrt()
            dist = d.detach().cpu()
            step_times.append(time.perf_counter() - t0)
            if callback is not None:
                callback(step, cfg.num_steps, dist)
    seconds = time.perf_counter() - t_start

    w_final = w_opt.detach().cpu().expand(n, num_ws, w_dim).clone() if k == 1 else w_opt.detach().cpu().clone()
    w_steps = None
    if steps_out is not None:
        w_steps = torch.stack(steps_out, dim=1)  # [N, steps, k, C]
        w_steps = w_steps.expand(n, cfg.num_steps, num_ws, w_dim) if k == 1 else w_steps
    return ProjectionResult(
        w=w_final, w_steps=w_steps, noise={name: v.detach().cpu()[:, 0] for name, v in noise.items()},
        dist=dist, seconds=seconds, num_steps=cfg.num_steps, space=cfg.space, seeds=seed_list, stats=stats,
        step_seconds=step_times,
    )


def synthesize(G: nn.Module, ws: torch.Tensor, noise: Optional[Dict[str, torch.Tensor]] = None) -> torch.Tensor:
    """Render ws [N, num_ws, w_dim] with ``noise_mode='const'``: the network's own noise maps (as official
    proj.png and ``generate.py --projected-w`` do), or per-sample maps ``noise`` (name -> [N, H, W])."""
    dev = _device_of(G)
    ws = ws.to(dev, torch.float32)
    with torch.no_grad():
        if noise is None:
            return G.synthesis(ws, noise_mode="const")
        out = []
        for i in range(ws.shape[0]):
            maps = {name: v[i].to(dev) for name, v in noise.items()}
            with override_noise(G, maps):
                out.append(G.synthesis(ws[i: i + 1], noise_mode="const"))
        return torch.cat(out)
