"""Training presets (``--cfg``) as named data, and the resolved options of a run (``training_options.json``).

The official StyleGAN2-ADA presets (auto, stylegan2, paper256, paper512, paper1024, cifar) are rows of
:data:`PRESETS` with the published values (Karras et al. 2020, train.py's cfg table); ``auto`` fills its
``None`` entries from the dataset resolution and the number of processes. ``cpu`` is styleforge's own small
preset for training 32-64 px datasets on a laptop-class CPU.

:func:`resolve_options` turns a preset plus the user's overrides into one :class:`TrainingOptions`: every
number the training loop uses, the network configs included, as plain JSON-able data. The loop reads nothing
else, so ``training_options.json`` describes a run completely.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

from ..errors import StyleforgeError


@dataclass(frozen=True)
class Preset:
    """One ``--cfg`` row. ``None`` in an ``auto`` row means "derived from resolution and process count"."""

    name: str
    ref_gpus: Optional[int]  # processes the batch was tuned for: batch_gpu = batch // ref_gpus (None: = gpus)
    kimg: float  # training length
    batch: Optional[int]  # global batch ("mb")
    mbstd: Optional[int]  # minibatch-stddev group size
    fmaps: Optional[float]  # channel_base = fmaps * 32768
    lrate: Optional[float]  # Adam learning rate of G and D
    gamma: Optional[float]  # R1 weight
    ema_kimg: Optional[float]  # G_ema half-life in kimg
    ema_rampup: Optional[float]  # ramp-up: half-life <= ema_rampup * images seen (None: off)
    map_layers: int  # mapping-network depth
    # Settings the official table keeps fixed, overridable per preset.
    z_dim: int = 512
    w_dim: int = 512
    channel_base: Optional[int] = None  # explicit channel_base (wins over fmaps)
    channel_max: int = 512
    num_fp16_res: int = 4  # used on CUDA only; CPU training always runs fp32
    conv_clamp: Optional[float] = 256
    pl_weight: float = 2.0
    style_mixing_prob: float = 0.9
    d_architecture: str = "resnet"
    kimg_per_tick: float = 4.0
    snap: int = 50  # ticks between snapshots
    grid: Optional[Tuple[int, int]] = None  # snapshot grid (cols, rows); None: the official size rule
    model: str = "stylegan2"  # what the preset trains (styleforge.train.registry)
    description: str = ""


PRESETS: Dict[str, Preset] = {
    p.name: p
    for p in [
        Preset("auto", None, 25000, None, None, None, None, None, None, 0.05, 2,
               description="official: everything derived from the resolution and the process count"),
        Preset("stylegan2", 8, 25000, 32, 4, 1, 0.002, 10, 10, None, 8,
               description="official StyleGAN2 config F (FFHQ 1024)"),
        Preset("paper256", 8, 25000, 64, 8, 0.5, 0.0025, 1, 20, None, 8,
               description="official ADA paper, 256x256 datasets"),
        Preset("paper512", 8, 25000, 64, 8, 1, 0.0025, 0.5, 20, None, 8,
               description="official ADA paper, 512x512 datasets"),
        Preset("paper1024", 8, 25000, 32, 4, 1, 0.002, 2, 10, None, 8,
               description="official ADA paper, 1024x1024 datasets"),
        Preset("cifar", 2, 100000, 64, 32, 1, 0.0025, 0.01, 500, 0.05, 2, pl_weight=0.0, style_mixing_prob=0.0,
               d_architecture="orig", description="official ADA paper, CIFAR-10"),
        # styleforge's CPU preset: small nets for 32-64 px data on a few cores. gamma follows the auto rule
        # (0.0002 * res^2 / batch); fp32 without conv_clamp (no mixed precision on CPU).
        Preset("cpu", None, 1000, 32, 4, None, 0.0025, None, 10, 0.05, 2, z_dim=256, w_dim=256,
               channel_base=4096, channel_max=128, num_fp16_res=0, conv_clamp=None, kimg_per_tick=1, snap=5,
               grid=(8, 8), description="styleforge: small nets for 32-64 px datasets on a CPU"),
        # SEGAN (curefate/SEGan_Pytorch README): 64 px, lr 0.002, batch 16, z/w 64, R1 10, D reg every 16, G reg
        # every 4; its rosinality-style StyleGAN2 caps the channels at 128 and maps with 8 layers.
        Preset("segan", None, 25000, 16, 4, 1, 0.002, 10, None, None, 8, z_dim=64, w_dim=64, channel_max=128,
               model="segan", description="SEGAN: StyleGAN2 with linear subspaces per layer (--mode 0..3)"),
    ]
}

AUG_MODES = ("ada", "noaug", "fixed")


def preset_names() -> List[str]:
    return list(PRESETS)


@dataclass
class ResolvedPreset:
    """A preset with every entry a number, for one resolution and process count."""

    name: str
    ref_gpus: int
    kimg: float
    batch: int
    mbstd: int
    channel_base: int
    channel_max: int
    lrate: float
    gamma: float
    ema_kimg: float
    ema_rampup: Optional[float]
    map_layers: int
    z_dim: int
    w_dim: int
    num_fp16_res: int
    conv_clamp: Optional[float]
    pl_weight: float
    style_mixing_prob: float
    d_architecture: str
    kimg_per_tick: float
    snap: int
    grid: Tuple[int, int]


def official_grid(resolution: int) -> Tuple[int, int]:
    """The official snapshot grid: about 7680x4320 pixels, 7-32 columns and 4-32 rows."""
    return (min(max(7680 // resolution, 7), 32), min(max(4320 // resolution, 4), 32))


def auto_gamma(resolution: int, batch: int) -> float:
    return 0.0002 * resolution**2 / batch


def resolve_preset(name: str, resolution: int, gpus: int = 1) -> ResolvedPreset:
    """Fill a preset's derived entries for ``resolution`` and ``gpus`` processes (the official auto rules)."""
    if name not in PRESETS:
        raise StyleforgeError(f"{{name}} {name!r}: unknown preset; use one of {', '.join(PRESETS)}", param="cfg",
                              value=name)
    p = PRESETS[name]
    res = int(resolution)
    if p.name == "auto":
        batch = max(min(gpus * min(4096 // res, 32), 64), gpus)
        mbstd = min(batch // gpus, 4)
        fmaps = 1 if res >= 512 else 0.5
        lrate = 0.002 if res >= 1024 else 0.0025
        gamma = auto_gamma(res, batch)
        ema = batch * 10 / 32
        ref_gpus = gpus
    else:
        batch, mbstd, fmaps, lrate = p.batch, p.mbstd, p.fmaps, p.lrate
        gamma = p.gamma if p.gamma is not None else auto_gamma(res, batch)
        ema = p.ema_kimg if p.ema_kimg is not None else batch * 10 / 32
        ref_gpus = p.ref_gpus if p.ref_gpus is not None else gpus
    channel_base = p.channel_base if p.channel_base is not None else int(fmaps * 32768)
    return ResolvedPreset(
        name=p.name, ref_gpus=ref_gpus, kimg=p.kimg, batch=batch, mbstd=mbstd, channel_base=channel_base,
        channel_max=p.channel_max, lrate=lrate, gamma=gamma, ema_kimg=ema, ema_rampup=p.ema_rampup,
        map_layers=p.map_layers, z_dim=p.z_dim, w_dim=p.w_dim, num_fp16_res=p.num_fp16_res, conv_clamp=p.conv_clamp,
        pl_weight=p.pl_weight, style_mixing_prob=p.style_mixing_prob, d_architecture=p.d_architecture,
        kimg_per_tick=p.kimg_per_tick, snap=p.snap, grid=tuple(p.grid) if p.grid else official_grid(res),
    )


# ---------------------------------------------------------------------------------------------------------------------
# Resolved options of one run.


@dataclass
class TrainSettings:
    """The user's choices for a run: ``train.py``'s flags (None: the preset's value). One object carries them
    from the command line through :func:`~styleforge.train.loop.train` to :func:`resolve_options`."""

    cfg: str = "auto"
    model: Optional[str] = None  # what is trained: a name of styleforge.train.registry (None: the preset's)
    model_opts: Dict[str, Any] = field(default_factory=dict)  # the model's own options (SEGAN's mode...)
    batch: Optional[int] = None
    gamma: Optional[float] = None
    kimg: Optional[float] = None
    snap: Optional[int] = None
    mirror: bool = False
    cond: bool = False
    aug: Optional[str] = None
    p: Optional[float] = None
    target: Optional[float] = None
    augpipe: Optional[str] = None
    cbase: Optional[int] = None
    cmax: Optional[int] = None
    map_layers: Optional[int] = None
    resume: Optional[str] = None
    seed: int = 0
    metrics: Optional[List[str]] = None
    inception: Optional[str] = None  # detector files for the metrics (None: the official files from the cache)
    vgg16: Optional[str] = None
    kimg_per_tick: Optional[float] = None
    workers: Optional[int] = None  # None: min(3, CPUs - 1) loader processes
    device: str = "auto"
    deterministic: bool = False
    fp32: bool = False  # CUDA only: no mixed precision


@dataclass
class TrainingOptions:
    """Everything a training run uses, as plain data (written to ``training_options.json``)."""

    # Data.
    data: str = ""
    dataset_name: str = ""
    resolution: int = 0
    num_channels: int = 3
    num_images: int = 0  # after mirroring
    cond: bool = False
    label_dim: int = 0
    mirror: bool = False
    # Base config.
    cfg: str = "auto"
    model: str = "stylegan2"  # the networks and loss, by name (styleforge.train.registry)
    gpus: int = 1
    batch: int = 32  # global batch
    batch_gpu: int = 32  # per process and accumulation round
    kimg: float = 25000
    gamma: float = 10.0
    # Networks (GeneratorConfig / DiscriminatorConfig dicts).
    G: Dict[str, Any] = field(default_factory=dict)
    D: Dict[str, Any] = field(default_factory=dict)
    model_opts: Dict[str, Any] = field(default_factory=dict)  # the model's own settings (registry: configure)
    # Optimisation.
    lrate: float = 0.0025
    betas: Tuple[float, float] = (0.0, 0.99)
    eps: float = 1e-8
    G_reg_interval: int = 4
    D_reg_interval: int = 16
    pl_weight: float = 2.0
    pl_batch_shrink: int = 2
    pl_decay: float = 0.01
    style_mixing_prob: float = 0.9
    ema_kimg: float = 10.0
    ema_rampup: Optional[float] = None
    # Augmentation.
    aug: str = "ada"
    augpipe: str = "bgc"
    p: float = 0.0  # initial (ada) or constant (fixed) augmentation probability
    target: float = 0.6
    ada_interval: int = 4
    ada_kimg: float = 500.0
    # Transfer / resume.
    resume: Optional[str] = None  # None, 'auto' or a path
    # Bookkeeping.
    seed: int = 0
    kimg_per_tick: float = 4.0
    snap: int = 50  # network + state snapshots every this many ticks
    image_snap: int = 50  # image grids every this many ticks
    grid: Tuple[int, int] = (8, 8)
    metrics: List[str] = field(default_factory=list)
    workers: int = 3
    device: str = "auto"
    fp16: bool = False  # mixed precision in the networks' fp16 layers (CUDA only)
    deterministic: bool = False
    desc: str = ""
    run_dir: str = ""

    def to_dict(self) -> Dict[str, Any]:
        d = dataclasses.asdict(self)
        d["betas"] = list(self.betas)
        d["grid"] = list(self.grid)
        return d

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "TrainingOptions":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise StyleforgeError(f"training options: unknown settings {sorted(unknown)} (written by a newer styleforge?)")
        d = dict(d)
        for k in ("betas", "grid"):
            if k in d and d[k] is not None:
                d[k] = tuple(d[k])
        return cls(**d)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @property
    def rounds(self) -> int:
        """Gradient-accumulation rounds per step in each process."""
        return self.batch // (self.batch_gpu * self.gpus)

    @property
    def total_nimg(self) -> int:
        return int(round(self.kimg * 1000))


def with_model(s: TrainSettings) -> TrainSettings:
    """``s`` with its model named: the one given, else the preset's (``segan`` for ``--cfg segan``)."""
    if s.model is not None:
        return s
    return dataclasses.replace(s, model=PRESETS[s.cfg].model if s.cfg in PRESETS else "stylegan2")


def _fmt(x: float) -> str:
    return f"{x:g}"


def run_desc(dataset_name: str, cfg: str, gpus: int, *, cond=False, mirror=False, gamma=None, kimg=None, batch=None,
             aug=None, p=None, target=None, augpipe=None, cbase=None, cmax=None, map_layers=None,
             resume=None, model="stylegan2") -> str:
    """The official run-directory description: ``<data>[-cond][-mirror]-<cfg>[gpus if auto][-gammaX]...``
    (a model other than StyleGAN2 follows the cfg: ``-<cfg>-<model>``)."""
    desc = dataset_name
    if cond:
        desc += "-cond"
    if mirror:
        desc += "-mirror"
    desc += f"-{cfg}" + (f"{gpus:d}" if cfg == "auto" else "")
    if model not in ("stylegan2", cfg):
        desc += f"-{model}"
    # overridden settings in the official order; aug and augpipe appear by value alone
    for label, value in (("gamma", gamma), ("kimg", kimg), ("batch", batch), ("", aug), ("p", p),
                         ("target", target), ("", augpipe), ("cbase", cbase), ("cmax", cmax), ("map", map_layers)):
        if value is not None:
            desc += f"-{label}{_fmt(value) if isinstance(value, float) else value}"
    if resume is not None:
        desc += "-resumeauto" if resume == "auto" else "-resumecustom"
    return desc


def network_configs(pr: ResolvedPreset, resolution: int, num_channels: int, c_dim: int, batch_gpu: int
                    ) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """GeneratorConfig and DiscriminatorConfig dicts for a resolved preset."""
    G = {
        "z_dim": pr.z_dim, "w_dim": pr.w_dim, "c_dim": c_dim, "img_resolution": resolution,
        "img_channels": num_channels,
        "mapping": {"num_layers": pr.map_layers},
        "synthesis": {"channel_base": pr.channel_base, "channel_max": pr.channel_max,
                      "num_fp16_res": pr.num_fp16_res, "conv_clamp": pr.conv_clamp, "architecture": "skip"},
    }
    D = {
        "c_dim": c_dim, "img_resolution": resolution, "img_channels": num_channels,
        "architecture": pr.d_architecture, "channel_base": pr.channel_base, "channel_max": pr.channel_max,
        "num_fp16_res": pr.num_fp16_res, "conv_clamp": pr.conv_clamp,
        "mbstd_group_size": pr.mbstd,  # the layer uses min(group, batch) at run time
    }
    return G, D


def resolve_options(
    *,
    data: str,
    dataset_name: str,
    resolution: int,
    num_channels: int,
    num_images: int,
    label_dim: int,
    gpus: int = 1,
    fp16: bool = False,
    settings: Optional[TrainSettings] = None,
    **fields: Any,
) -> TrainingOptions:
    """Apply the preset ``settings.cfg`` and the user's ``settings`` (or ``TrainSettings`` fields given as
    keywords, replacing those of ``settings``), with the official validation rules (one-line errors)."""
    s = with_model(dataclasses.replace(settings or TrainSettings(), **fields))
    if gpus < 1 or gpus & (gpus - 1):
        raise StyleforgeError("must be a power of two (1, 2, 4, ...)", param="gpus", value=gpus)
    if resolution < 8 or resolution & (resolution - 1):
        raise StyleforgeError(f"resolution {resolution} is not supported; train at a power of two >= 8", param="data",
                              label="the dataset")
    pr = resolve_preset(s.cfg, resolution, gpus)
    for param, v, lo, hi in (("cbase", s.cbase, 16, 1 << 20), ("cmax", s.cmax, 1, 4096),
                             ("map_layers", s.map_layers, 1, 16)):
        if v is not None and not lo <= v <= hi:
            raise StyleforgeError(f"must be between {lo} and {hi}", param=param, value=v)
    if s.cbase is not None:
        pr.channel_base = int(s.cbase)
    if s.cmax is not None:
        pr.channel_max = int(s.cmax)
    if s.map_layers is not None:
        pr.map_layers = int(s.map_layers)
    if s.cond and label_dim == 0:
        raise StyleforgeError("the dataset has no labels (dataset.json 'labels' is null); drop {cond} or add labels",
                              param="cond")
    c_dim = label_dim if s.cond else 0

    total_batch = pr.batch
    batch_gpu = max(pr.batch // pr.ref_gpus, 1)
    if s.batch is not None:
        if s.batch < 1 or s.batch % gpus:
            raise StyleforgeError(f"must be at least 1 and divisible by {{gpus}} ({gpus})", param="batch",
                                  value=s.batch, also={"gpus": "gpus"})
        total_batch, batch_gpu = s.batch, s.batch // gpus
    batch_gpu = min(batch_gpu, total_batch // gpus)
    if total_batch % (batch_gpu * gpus):
        raise StyleforgeError(f"{{name}} {total_batch} is not a multiple of {gpus} process(es) x {batch_gpu} per round",
                              param="batch", value=total_batch)
    # The official auto/cfg rules compute mbstd for the preset's own batch; keep the group within one round.
    if batch_gpu % min(pr.mbstd, batch_gpu):
        raise StyleforgeError(
            f"batch per process {batch_gpu} is not divisible by the minibatch-stddev group {pr.mbstd}; "
            f"choose {{batch}} as a multiple of {pr.mbstd * gpus}", also={"batch": "batch"})

    if s.gamma is not None and (not math.isfinite(s.gamma) or s.gamma < 0):
        raise StyleforgeError("must be a finite number >= 0", param="gamma", value=s.gamma)
    if s.kimg is not None and (not math.isfinite(s.kimg) or s.kimg <= 0):
        raise StyleforgeError("must be > 0", param="kimg", value=s.kimg)
    if s.snap is not None and s.snap < 1:
        raise StyleforgeError("must be at least 1", param="snap", value=s.snap)
    if s.kimg_per_tick is not None and (not math.isfinite(s.kimg_per_tick) or s.kimg_per_tick <= 0):
        raise StyleforgeError("must be > 0", param="kimg_per_tick", value=s.kimg_per_tick)

    aug_mode = s.aug if s.aug is not None else "ada"
    if aug_mode not in AUG_MODES:
        raise StyleforgeError(f"{{name}} {aug_mode!r}: use ada, noaug or fixed", param="aug", value=aug_mode)
    if s.p is not None:
        if aug_mode != "fixed":
            raise StyleforgeError("{name} can only be specified with {aug} fixed", param="p", value=s.p,
                                  also={"aug": "aug"})
        if not 0 <= s.p <= 1:
            raise StyleforgeError("must be between 0 and 1", param="p", value=s.p)
    elif aug_mode == "fixed":
        raise StyleforgeError("{aug} fixed needs {name} (the constant augmentation probability)", param="p",
                              also={"aug": "aug"})
    if s.target is not None:
        if aug_mode != "ada":
            raise StyleforgeError("{name} can only be specified with {aug} ada", param="target", value=s.target,
                                  also={"aug": "aug"})
        if not 0 <= s.target <= 1:
            raise StyleforgeError("must be between 0 and 1", param="target", value=s.target)
    from .augment import AUGPIPE_PRESETS

    pipe = s.augpipe if s.augpipe is not None else "bgc"
    if pipe not in AUGPIPE_PRESETS:
        official_only = {"filter", "noise", "cutout", "bgcf", "bgcfn", "bgcfnc"}
        why = "is not implemented by styleforge" if pipe in official_only else "is unknown"
        raise StyleforgeError(f"{{name}} {pipe!r} {why}; use one of {', '.join(AUGPIPE_PRESETS)}", param="augpipe",
                              value=pipe)
    if s.augpipe is not None and aug_mode == "noaug":
        raise StyleforgeError("{name} cannot be specified with {aug} noaug", param="augpipe", value=s.augpipe,
                              also={"aug": "aug"})

    G, D = network_configs(pr, resolution, num_channels, c_dim, batch_gpu)
    ema_rampup = pr.ema_rampup
    ada_kimg = 500.0
    if s.resume is not None and s.resume != "auto":
        ada_kimg = 100.0  # official: faster ADA adjustment and no EMA ramp-up when fine-tuning
        ema_rampup = None
    desc = run_desc(dataset_name, s.cfg, gpus, cond=s.cond, mirror=s.mirror, gamma=s.gamma, kimg=s.kimg,
                    batch=s.batch, aug=s.aug, p=s.p, target=s.target, augpipe=s.augpipe, cbase=s.cbase, cmax=s.cmax,
                    map_layers=s.map_layers, resume=None if s.resume in (None, "auto") else s.resume, model=s.model)
    snap_v = s.snap if s.snap is not None else pr.snap
    return TrainingOptions(
        data=data, dataset_name=dataset_name, resolution=resolution, num_channels=num_channels,
        num_images=num_images, cond=s.cond, label_dim=c_dim, mirror=s.mirror, cfg=s.cfg, model=s.model,
        model_opts=dict(s.model_opts), gpus=gpus,
        batch=total_batch, batch_gpu=batch_gpu, kimg=s.kimg if s.kimg is not None else pr.kimg,
        gamma=s.gamma if s.gamma is not None else pr.gamma, G=G, D=D, lrate=pr.lrate,
        pl_weight=pr.pl_weight, style_mixing_prob=pr.style_mixing_prob, ema_kimg=pr.ema_kimg,
        ema_rampup=ema_rampup, aug=aug_mode, augpipe=pipe if aug_mode != "noaug" else "noaug",
        p=s.p if s.p is not None else 0.0, target=s.target if s.target is not None else 0.6, ada_kimg=ada_kimg,
        resume=s.resume, seed=s.seed,
        kimg_per_tick=s.kimg_per_tick if s.kimg_per_tick is not None else pr.kimg_per_tick,
        snap=snap_v, image_snap=snap_v, grid=pr.grid, metrics=list(s.metrics or []),
        workers=s.workers if s.workers is not None else 3,
        device=s.device, fp16=fp16, deterministic=s.deterministic, desc=desc,
    )
