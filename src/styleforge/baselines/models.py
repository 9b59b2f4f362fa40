"""The baselines as trainable models of the shared trainer (:mod:`styleforge.train.registry`), by name.

Each row of :data:`BASELINES` is a pair of networks (:mod:`.nets`), a loss (:mod:`.loss`) and the training recipe
the literature gives it; the recipe's numbers live in ``opts.model_opts`` (``training_options.json``, the resume
state), where a run can override them:

====================  =======================  ===========  ==========================================  ========
model                 networks                 loss         optimiser (lr G / D, betas)                 n_critic
====================  =======================  ===========  ==========================================  ========
gan / cgan            MLP                      ns           Adam 2e-4 / 2e-4, (0.5, 0.999)              1
dcgan / cdcgan        DCGAN                    ns           Adam 2e-4 / 2e-4, (0.5, 0.999)              1
wgan                  DCGAN (batch-norm D)     wgan         RMSprop 5e-5, critic weights clipped to 0.01 5
wgan-gp               DCGAN (layer-norm D)     wgan-gp 10   Adam 1e-4 / 1e-4, (0, 0.9)                  5
dcgan-style           mapping + AdaIN G, DCGAN ns           Adam 2e-4 / 2e-4, (0.5, 0.999)              1
progan                ProGAN                   wgan-gp 10,  Adam 1e-3 / 1e-3, (0, 0.99)                 1
                                               drift 1e-3
====================  =======================  ===========  ==========================================  ========

``cgan`` and ``cdcgan`` are conditional by name; the others become conditional with ``cond``. TTUR (Heusel et
al. 2017) is ``lr_G`` != ``lr_D``; spectral normalisation is the D config's ``spectral_norm``; feature matching is
``feature_matching``. ProGAN grows from 4 px: ``stage_kimg`` thousand images at 4 px, then per resolution
``stage_kimg`` of fade-in and ``stage_kimg`` at full strength (default: the run's length split so that the final
resolution gets the last two shares).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Dict, Tuple

import torch

from ..errors import StyleforgeError
from ..train.presets import TrainingOptions
from ..train.registry import Model, register_model
from . import nets
from .loss import BaselineLoss, ClippedRMSprop


@dataclass(frozen=True)
class Baseline:
    name: str
    kind: str  # networks: mlp | dcgan | style | progan
    conditional: bool  # conditional by name (cgan, cdcgan)
    recipe: Dict[str, Any] = field(default_factory=dict)
    d_norm: str = "batch"
    description: str = ""


_ADAM_DCGAN = {"optimizer": "adam", "lr_G": 2e-4, "lr_D": 2e-4, "betas": [0.5, 0.999], "loss": "ns", "n_critic": 1}

BASELINES: Dict[str, Baseline] = {b.name: b for b in [
    Baseline("gan", "mlp", False, _ADAM_DCGAN, description="MLP GAN (Goodfellow et al. 2014)"),
    Baseline("cgan", "mlp", True, _ADAM_DCGAN, description="conditional MLP GAN (Mirza & Osindero 2014)"),
    Baseline("dcgan", "dcgan", False, _ADAM_DCGAN, description="DCGAN (Radford et al. 2016)"),
    Baseline("cdcgan", "dcgan", True, _ADAM_DCGAN, description="conditional DCGAN"),
    Baseline("wgan", "dcgan", False,
             {"optimizer": "rmsprop-clip", "lr_G": 5e-5, "lr_D": 5e-5, "clip": 0.01, "loss": "wgan", "n_critic": 5},
             description="WGAN with weight clipping (Arjovsky et al. 2017)"),
    Baseline("wgan-gp", "dcgan", False,
             {"optimizer": "adam", "lr_G": 1e-4, "lr_D": 1e-4, "betas": [0.0, 0.9], "loss": "wgan-gp",
              "gp_weight": 10.0, "n_critic": 5}, d_norm="layer",
             description="WGAN-GP (Gulrajani et al. 2017)"),
    Baseline("dcgan-style", "style", False, _ADAM_DCGAN,
             description="DCGAN with a mapping network and AdaIN in G"),
    Baseline("progan", "progan", False,
             {"optimizer": "adam", "lr_G": 1e-3, "lr_D": 1e-3, "betas": [0.0, 0.99], "loss": "wgan-gp",
              "gp_weight": 10.0, "drift": 1e-3, "n_critic": 1}, d_norm="none",
             description="progressive growing (Karras et al. 2018)"),
]}

_RES_LIMITS = {"mlp": (8, 128), "dcgan": (8, 256), "style": (8, 256), "progan": (8, 256)}
_CONFIGS = {"mlp": nets.MLPConfig, "dcgan": nets.DCGANConfig, "style": nets.StyleDCGANConfig,
            "progan": nets.ProGANConfig}


def check_resolution(model: str, resolution: int) -> None:
    """A StyleforgeError naming ``resolution`` when ``model`` cannot make images of that size."""
    lo, hi = _RES_LIMITS[BASELINES[model].kind]
    r = int(resolution)
    if r < lo or r > hi or r & (r - 1):
        sizes = ", ".join(str(2**k) for k in range(int(math.log2(lo)), int(math.log2(hi)) + 1))
        raise StyleforgeError(f"{model} cannot make {r}x{r} images; use one of {sizes}", param="resolution",
                              value=r)


def network_configs(b: Baseline, resolution: int, channels: int, c_dim: int) -> Tuple[dict, dict]:
    common = {"c_dim": c_dim, "img_resolution": resolution, "img_channels": channels}
    if b.kind == "style":
        return nets.StyleDCGANConfig(**common).to_dict(), nets.DCGANConfig(**common).to_dict()
    if b.kind == "dcgan":
        return nets.DCGANConfig(**common).to_dict(), nets.DCGANConfig(**common, d_norm=b.d_norm).to_dict()
    cfg = _CONFIGS[b.kind](**common).to_dict()
    return cfg, dict(cfg)


def _configure(opts: TrainingOptions) -> TrainingOptions:
    b = BASELINES[opts.model]
    if b.conditional and not opts.cond:
        raise StyleforgeError(f"{b.name} is conditional: train it on a labelled dataset with {{cond}}",
                              param="cond")
    check_resolution(b.name, opts.resolution)
    opts.G, opts.D = network_configs(b, opts.resolution, opts.num_channels, opts.label_dim if opts.cond else 0)
    recipe = dict(b.recipe, feature_matching=False)
    if b.kind == "progan":
        phases = 2 * (int(math.log2(opts.resolution)) - 2) + 2
        recipe["stage_kimg"] = opts.kimg / phases
    opts.model_opts = recipe
    opts.ema_kimg, opts.ema_rampup = 0.0, None  # G_ema = G unless a run asks for averaging
    return opts


def _G_class(kind: str):
    return {"mlp": nets.MLPGenerator, "dcgan": nets.DCGANGenerator, "style": nets.StyleDCGANGenerator,
            "progan": nets.ProGANGenerator}[kind]


def _D_class(kind: str):
    return {"mlp": nets.MLPDiscriminator, "dcgan": nets.DCGANDiscriminator, "style": nets.DCGANDiscriminator,
            "progan": nets.ProGANDiscriminator}[kind]


def _build_networks(opts: TrainingOptions) -> Dict[str, torch.nn.Module]:
    b = BASELINES[opts.model]
    G_cls, D_cls = _G_class(b.kind), _D_class(b.kind)
    return {"G": G_cls(G_cls.config_class.from_dict(opts.G)), "D": D_cls(D_cls.config_class.from_dict(opts.D))}


def _build_loss(G, D, augment_pipe, opts: TrainingOptions, reduce_mean) -> BaselineLoss:
    mo = opts.model_opts
    fade = D.current if BASELINES[opts.model].kind == "progan" else None
    if augment_pipe is not None:
        raise StyleforgeError("the baselines train without augmentation: use {aug} noaug", also={"aug": "aug"})
    return BaselineLoss(G, D, kind=mo.get("loss", "ns"), gp_weight=mo.get("gp_weight", 10.0),
                        drift=mo.get("drift", 0.0), feature_matching=mo.get("feature_matching", False), fade=fade)


def _optimizer(net: str, module: torch.nn.Module, opts: TrainingOptions) -> torch.optim.Optimizer:
    mo = opts.model_opts
    lr = float(mo.get(f"lr_{net}", opts.lrate))
    if mo.get("optimizer") == "rmsprop-clip":
        if net == "D":
            return ClippedRMSprop(module.parameters(), lr=lr, clip=float(mo.get("clip", 0.01)))
        return torch.optim.RMSprop(module.parameters(), lr=lr)
    return torch.optim.Adam(module.parameters(), lr=lr, betas=tuple(mo.get("betas", opts.betas)), eps=opts.eps)


def _intervals(opts: TrainingOptions) -> Dict[str, int]:
    return {"Gmain": int(opts.model_opts.get("n_critic", 1))}


def progan_schedule(cur_nimg: int, stage_nimg: float, max_stage: int) -> Tuple[int, float]:
    """(stage, alpha) after ``cur_nimg`` images: 4 px for ``stage_nimg`` images, then per resolution a fade-in
    (alpha 0 -> 1) and a stable phase of ``stage_nimg`` images each."""
    p = cur_nimg / max(stage_nimg, 1.0)
    if p < 1:
        return 2, 1.0
    k, within = divmod(p - 1, 2)
    stage = 3 + int(k)
    if stage > max_stage:
        return max_stage, 1.0
    return stage, float(min(within, 1.0))


def _progan_on_step(networks: Dict[str, torch.nn.Module], cur_nimg: int, opts: TrainingOptions) -> None:
    G = networks["G"]
    stage, alpha = progan_schedule(cur_nimg, float(opts.model_opts["stage_kimg"]) * 1000, G.max_stage)
    for net in networks.values():
        net.set_stage(stage, alpha)


for _b in BASELINES.values():
    register_model(Model(_b.name, _build_networks, _build_loss, configure=_configure, optimizer=_optimizer,
                         intervals=_intervals, on_step=_progan_on_step if _b.kind == "progan" else None))
