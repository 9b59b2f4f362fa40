"""The ``segan`` training model: SEGAN generators (:mod:`.networks`) on the shared StyleGAN2 trainer.

``train.py --cfg segan --mode 2`` picks this model (the ``segan`` preset names it). Everything but the generator
and one loss term is StyleGAN2-ADA's: the discriminator, the non-saturating loss with lazy R1 and path-length
regularisation, style mixing, G_ema, ADA, snapshots, exact resume, SIGTERM and multi-process training.

Options (``TrainSettings.model_opts``; ``--mode``, ``--subspace-dim``, ``--orth-weight``):

* ``mode`` 0..3 (default 2): see :mod:`styleforge.segan.networks`;
* ``subspace_dim``: coordinates per layer (default: w_dim, as the seed);
* ``orth_weight`` (default 1, EigenGAN's ``g_loss_weight_orth_loss``): weight of the orthogonality term
  ``0.5 * ||U^T U - I||_F^2`` (mean over layers), added to G's main loss at every step; logged as
  ``Loss/G/orth``. 0 turns it off (the seed has none).
"""

from __future__ import annotations

import math
from typing import Any, Dict

import torch

from ..errors import StyleforgeError
from ..train.loss import StyleGAN2Loss
from ..train.presets import TrainingOptions
from ..train.registry import Model, get_model, register_model
from .networks import DEFAULT_MODE, MODES, SeganGenerator, SeganGeneratorConfig

OPTIONS: Dict[str, Any] = {"mode": DEFAULT_MODE, "subspace_dim": None, "orth_weight": 1.0}


class SeganLoss(StyleGAN2Loss):
    """StyleGAN2's loss plus ``orth_weight`` x the generator's orthogonality term in the G main phase."""

    def __init__(self, G, D, augment_pipe=None, orth_weight: float = 1.0, **kw):
        super().__init__(G, D, augment_pipe, **kw)
        self.orth_weight = float(orth_weight)

    def accumulate_gradients(self, phase, real_img, real_c, gen_z, gen_c, gain: float = 1.0):
        stats = super().accumulate_gradients(phase, real_img, real_c, gen_z, gen_c, gain)
        if phase in ("Gmain", "Gboth"):
            orth = self.G.orthogonality()
            stats["Loss/G/orth"] = orth.detach().reshape(1)
            if self.orth_weight and orth.requires_grad:
                orth.mul(self.orth_weight * gain).backward()
        return stats


def check_options(o: Dict[str, Any]) -> Dict[str, Any]:
    mode = o["mode"]
    if isinstance(mode, bool) or not isinstance(mode, int) or mode not in MODES:
        raise StyleforgeError("must be 0, 1, 2 or 3 (0 plain StyleGAN2, 1 subspace added to the feature maps, "
                              "2 w through the subspace before modulation, 3 w rescaled by a learned diagonal)",
                              param="mode", value=mode)
    dim = o["subspace_dim"]
    if dim is not None and (isinstance(dim, bool) or not isinstance(dim, int) or dim < 1):
        raise StyleforgeError("must be a whole number >= 1", param="subspace_dim", value=dim)
    w = o["orth_weight"]
    if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w) or w < 0:
        raise StyleforgeError("must be a finite number >= 0", param="orth_weight", value=w)
    return {"mode": mode, "subspace_dim": dim, "orth_weight": float(w)}


def _configure(opts: TrainingOptions) -> TrainingOptions:
    o = check_options({**OPTIONS, **(opts.model_opts or {})})
    w_dim = int(opts.G.get("w_dim", 512))
    if o["subspace_dim"] is not None and o["subspace_dim"] > w_dim:
        raise StyleforgeError(f"{o['subspace_dim']} is beyond the layers' {w_dim} w coordinates; use at most {w_dim}",
                              param="subspace_dim", value=o["subspace_dim"])
    opts.model_opts = o
    opts.G = {**opts.G, "segan": {"mode": o["mode"], "dim": o["subspace_dim"]}}
    tag = f"-mode{o['mode']}"
    at = opts.desc.find("-segan")
    if tag not in opts.desc:  # <data>-segan-mode2[-overrides...], like the seed's run names
        opts.desc = opts.desc + tag if at < 0 else opts.desc[: at + 6] + tag + opts.desc[at + 6:]
    return opts


def _build_networks(opts: TrainingOptions) -> Dict[str, torch.nn.Module]:
    from ..networks import Discriminator, DiscriminatorConfig

    return {"G": SeganGenerator(SeganGeneratorConfig.from_dict(opts.G)),
            "D": Discriminator(DiscriminatorConfig.from_dict(opts.D))}


def _build_loss(G, D, augment_pipe, opts: TrainingOptions, reduce_mean) -> SeganLoss:
    return SeganLoss(G, D, augment_pipe, orth_weight=opts.model_opts.get("orth_weight", 1.0), r1_gamma=opts.gamma,
                     style_mixing_prob=opts.style_mixing_prob, pl_weight=opts.pl_weight,
                     pl_batch_shrink=opts.pl_batch_shrink, pl_decay=opts.pl_decay, fp16=opts.fp16,
                     reduce_mean=reduce_mean)


_sg2 = get_model("stylegan2")
MODEL = register_model(Model("segan", _build_networks, _build_loss, configure=_configure, sample=_sg2.sample,
                             shared_buffers=_sg2.shared_buffers, options=dict(OPTIONS), check_options=check_options))
