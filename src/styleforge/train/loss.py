"""The StyleGAN2 training loss: non-saturating logistic GAN loss with lazy R1 and path-length regularisation.

Karras et al. 2020, "Analyzing and Improving the Image Quality of StyleGAN" (sections 2.2 and 3.2, appendix B):

* G main: ``softplus(-D(G(z)))`` (non-saturating logistic loss), with style mixing: with probability
  ``style_mixing_prob`` the ws from a second z replace those from a cutoff drawn uniformly in [1, num_ws).
* G reg (every ``G_reg_interval`` steps, weight scaled by the interval): path-length penalty
  ``pl_weight * (|J_w^T y| - a)^2`` on a batch shrunk by ``pl_batch_shrink``, with ``y`` Gaussian pixel noise
  scaled by 1/sqrt(H*W) and ``a`` the running mean of the lengths (decay ``pl_decay``).
* D main: ``softplus(D(G(z))) + softplus(-D(x))``.
* D reg (every ``D_reg_interval`` steps, scaled by the interval): R1, ``gamma/2 * |grad_x D(x)|^2`` on reals.

Every image shown to D, real or fake, first goes through the augmentation pipe when there is one (ADA), R1
included (its gradient is taken w.r.t. the un-augmented reals, through the pipe).

:meth:`StyleGAN2Loss.accumulate_gradients` adds one phase's gradients (scaled by ``gain``) and returns the
phase's logged scalars as ``{name: tensor of per-sample values}`` under the official names
(``Loss/G/loss``, ``Loss/pl_penalty``, ``Loss/D/loss``, ``Loss/r1_penalty``, ``Loss/signs/real``...).
"""

from __future__ import annotations

import math
from typing import Callable, Dict, Optional

import torch
import torch.nn.functional as F
from torch import nn

PHASES = ("Gmain", "Greg", "Gboth", "Dmain", "Dreg", "Dboth")

Stats = Dict[str, torch.Tensor]


class StyleGAN2Loss:
    """Loss terms and their gradients for one G/D pair (see the module docstring).

    ``reduce_mean``: optional function averaging a scalar tensor over processes; used for the path-length
    running mean so that every process keeps the same ``pl_mean`` (None: single process).
    """

    def __init__(
        self,
        G: nn.Module,
        D: nn.Module,
        augment_pipe: Optional[nn.Module] = None,
        r1_gamma: float = 10.0,
        style_mixing_prob: float = 0.9,
        pl_weight: float = 2.0,
        pl_batch_shrink: int = 2,
        pl_decay: float = 0.01,
        fp16: bool = False,
        reduce_mean: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
    ):
        self.G = G
        self.D = D
        self.augment_pipe = augment_pipe
        self.r1_gamma = float(r1_gamma)
        self.style_mixing_prob = float(style_mixing_prob)
        self.pl_weight = float(pl_weight)
        self.pl_batch_shrink = int(pl_batch_shrink)
        self.pl_decay = float(pl_decay)
        self.fp16 = fp16
        self.reduce_mean = reduce_mean
        device = next(G.parameters()).device
        self.pl_mean = torch.zeros([], device=device)

    # -- what the trainer asks (styleforge.train.registry.Loss) -------------------------------------------------

    def regularizes(self, net: str) -> bool:
        """Whether ``<net>reg`` does anything: path length (G) with ``pl_weight``, R1 (D) with ``r1_gamma``."""
        return (self.pl_weight if net == "G" else self.r1_gamma) != 0

    def state_dict(self) -> Dict[str, torch.Tensor]:
        return {"pl_mean": self.pl_mean.detach().cpu().clone()}

    def load_state_dict(self, state: Dict[str, torch.Tensor]) -> None:
        self.pl_mean.copy_(state["pl_mean"].to(self.pl_mean.device))

    # -- forward passes ------------------------------------------------------------------------------------------

    def mix_styles(self, ws: torch.Tensor, z: torch.Tensor, c: Optional[torch.Tensor]) -> torch.Tensor:
        """Style mixing regularisation: from a random cutoff on, take the ws of a fresh z (same labels)."""
        if self.style_mixing_prob <= 0:
            return ws
        num_ws = ws.shape[1]
        cutoff = torch.empty([], dtype=torch.int64, device=ws.device).random_(1, num_ws)
        mixed = torch.rand([], device=ws.device) < self.style_mixing_prob
        cutoff = torch.where(mixed, cutoff, torch.full_like(cutoff, num_ws))
        ws2 = self.G.mapping(torch.randn_like(z), c, update_w_avg=False)
        take = (torch.arange(num_ws, device=ws.device) >= cutoff).reshape(1, num_ws, 1)
        return torch.where(take, ws2, ws)

    def run_G(self, z: torch.Tensor, c: Optional[torch.Tensor]):
        ws = self.G.mapping(z, c)
        ws = self.mix_styles(ws, z, c)
        img = self.G.synthesis(ws, noise_mode="random", fp16=self.fp16)
        return img, ws

    def run_D(self, img: torch.Tensor, c: Optional[torch.Tensor]) -> torch.Tensor:
        if self.augment_pipe is not None:
            img = self.augment_pipe(img)
        return self.D(img, c, fp16=self.fp16)

    # -- phases --------------------------------------------------------------------------------------------------

    def accumulate_gradients(
        self,
        phase: str,
        real_img: torch.Tensor,
        real_c: Optional[torch.Tensor],
        gen_z: torch.Tensor,
        gen_c: Optional[torch.Tensor],
        gain: float = 1.0,
    ) -> Stats:
        """Backpropagate the loss terms of ``phase`` (one of :data:`PHASES`), scaled by ``gain``.

        ``real_img`` is float in [-1, 1]. Gradients accumulate into whichever parameters require grad; the
        caller enables only the phase's network. Returns the logged per-sample values (detached).
        """
        if phase not in PHASES:
            raise ValueError(f"unknown phase {phase!r}; expected one of {PHASES}")
        do_Gmain = phase in ("Gmain", "Gboth")
        do_Dmain = phase in ("Dmain", "Dboth")
        do_Gpl = phase in ("Greg", "Gboth") and self.pl_weight != 0
        do_Dr1 = phase in ("Dreg", "Dboth") and self.r1_gamma != 0
        stats: Stats = {}

        if do_Gmain:
            gen_img, _ = self.run_G(gen_z, gen_c)
            gen_logits = self.run_D(gen_img, gen_c)
            loss_Gmain = F.softplus(-gen_logits)  # -log(sigmoid(gen_logits))
            stats["Loss/scores/fake"] = gen_logits.detach()
            stats["Loss/signs/fake"] = gen_logits.detach().sign()
            stats["Loss/G/loss"] = loss_Gmain.detach()
            loss_Gmain.mean().mul(gain).backward()

        if do_Gpl:
            n = max(gen_z.shape[0] // self.pl_batch_shrink, 1)
            gen_img, gen_ws = self.run_G(gen_z[:n], gen_c[:n] if gen_c is not None else None)
            h, w = gen_img.shape[2], gen_img.shape[3]
            pl_noise = torch.randn_like(gen_img) / math.sqrt(h * w)
            (pl_grads,) = torch.autograd.grad(
                outputs=[(gen_img * pl_noise).sum()], inputs=[gen_ws], create_graph=True, only_inputs=True)
            pl_lengths = pl_grads.square().sum(2).mean(1).sqrt()
            batch_mean = pl_lengths.mean()
            if self.reduce_mean is not None:  # value averaged over processes, gradient of this process's share
                m = batch_mean.detach()
                batch_mean = batch_mean + (self.reduce_mean(m) - m)
            pl_mean = self.pl_mean.lerp(batch_mean, self.pl_decay)  # (the penalty also sees this batch's part)
            self.pl_mean.copy_(pl_mean.detach())
            pl_penalty = (pl_lengths - pl_mean).square()
            loss_Gpl = pl_penalty * self.pl_weight
            stats["Loss/pl_penalty"] = pl_penalty.detach()
            stats["Loss/G/reg"] = loss_Gpl.detach()
            # the `* 0` term keeps every synthesis output in the graph (all processes reduce the same params)
            (gen_img[:, 0, 0, 0] * 0 + loss_Gpl).mean().mul(gain).backward()

        loss_Dgen = None
        if do_Dmain:
            with torch.no_grad():
                gen_img, _ = self.run_G(gen_z, gen_c)
            gen_logits = self.run_D(gen_img, gen_c)
            loss_Dgen = F.softplus(gen_logits)  # -log(1 - sigmoid(gen_logits))
            stats["Loss/scores/fake"] = gen_logits.detach()
            stats["Loss/signs/fake"] = gen_logits.detach().sign()
            loss_Dgen.mean().mul(gain).backward()

        if do_Dmain or do_Dr1:
            real_tmp = real_img.detach().requires_grad_(do_Dr1)
            real_logits = self.run_D(real_tmp, real_c)
            stats["Loss/scores/real"] = real_logits.detach()
            stats["Loss/signs/real"] = real_logits.detach().sign()
            loss = real_logits * 0
            if do_Dmain:
                loss_Dreal = F.softplus(-real_logits)  # -log(sigmoid(real_logits))
                stats["Loss/D/loss"] = (loss_Dgen + loss_Dreal).detach()
                loss = loss + loss_Dreal
            if do_Dr1:
                (r1_grads,) = torch.autograd.grad(
                    outputs=[real_logits.sum()], inputs=[real_tmp], create_graph=True, only_inputs=True)
                r1_penalty = r1_grads.square().sum([1, 2, 3])
                loss_Dr1 = r1_penalty * (self.r1_gamma / 2)
                stats["Loss/r1_penalty"] = r1_penalty.detach()
                stats["Loss/D/reg"] = loss_Dr1.detach()
                loss = loss + loss_Dr1.reshape(loss.shape)
            loss.mean().mul(gain).backward()

        return stats
