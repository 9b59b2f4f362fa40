"""The baselines' losses, on the shared trainer's Loss protocol (:class:`styleforge.train.registry.Loss`).

``kind``:

* ``ns``: the non-saturating GAN loss (Goodfellow et al. 2014): D minimises softplus(D(fake)) + softplus(-D(real))
  (binary cross-entropy on logits), G minimises softplus(-D(G(z))).
* ``wgan``: the Wasserstein critic (Arjovsky et al. 2017): D minimises D(fake) - D(real), G minimises -D(G(z)).
  The Lipschitz constraint is the optimiser's weight clipping (:class:`ClippedRMSprop`).
* ``wgan-gp``: the same with the gradient penalty (Gulrajani et al. 2017) ``gp_weight * (|grad D(x_hat)| - 1)^2``
  at random points ``x_hat`` between real and fake samples (the label is the real one), plus ProGAN's drift term
  ``drift * D(real)^2`` when ``drift > 0``.

``feature_matching`` (Salimans et al. 2016): G minimises the squared distance between the mean D features of the
real and the generated batch instead of its adversarial loss. ``fade`` (ProGAN): a function giving the current
(stage, alpha), so that the reals are shown at the resolution G is at (:func:`.nets.fade_reals`).
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Optional, Tuple

import torch
import torch.nn.functional as F

from .nets import fade_reals

KINDS = ("ns", "wgan", "wgan-gp")


def gradient_penalty(D, real: torch.Tensor, fake: torch.Tensor, c: Optional[torch.Tensor],
                     eps: torch.Tensor) -> torch.Tensor:
    """Per-sample ``(|grad_x D(x, c)| - 1)^2`` at ``x = lerp(real, fake, eps)`` (eps [N, 1, 1, 1]); differentiable
    with respect to D's parameters (create_graph)."""
    x = torch.lerp(real.detach(), fake.detach(), eps).requires_grad_(True)
    out = D(x, c)
    (grad,) = torch.autograd.grad(out.sum(), x, create_graph=True)
    return (grad.flatten(1).norm(dim=1) - 1).square()


class BaselineLoss:
    """See the module docstring."""

    def __init__(self, G, D, kind: str = "ns", gp_weight: float = 10.0, drift: float = 0.0,
                 feature_matching: bool = False, fade: Optional[Callable[[], Tuple[int, float]]] = None):
        if kind not in KINDS:
            raise ValueError(f"loss kind must be one of {KINDS}, got {kind!r}")
        self.G, self.D = G, D
        self.kind, self.gp_weight, self.drift = kind, float(gp_weight), float(drift)
        self.feature_matching = bool(feature_matching)
        self.fade = fade

    def _reals(self, img: torch.Tensor) -> torch.Tensor:
        if self.fade is None:
            return img
        stage, alpha = self.fade()
        return fade_reals(img, stage, alpha)

    def accumulate_gradients(self, phase: str, real_img, real_c, gen_z, gen_c, gain: float = 1.0
                             ) -> Dict[str, torch.Tensor]:
        if phase == "Gmain":
            fake = self.G(gen_z, gen_c)
            if self.feature_matching:
                _, f_fake = self.D(fake, gen_c, return_features=True)
                with torch.no_grad():
                    _, f_real = self.D(self._reals(real_img), real_c, return_features=True)
                loss = (f_real.mean(0) - f_fake.mean(0)).square().sum().expand(len(fake))
            else:
                logits = self.D(fake, gen_c)
                loss = (F.softplus(-logits) if self.kind == "ns" else -logits).flatten()
            loss.mean().mul(gain).backward()
            return {"Loss/G/loss": loss.detach()}
        if phase != "Dmain":
            return {}
        with torch.no_grad():
            fake = self.G(gen_z, gen_c)
        real = self._reals(real_img)
        real_logits = self.D(real, real_c).flatten()
        fake_logits = self.D(fake, gen_c).flatten()
        stats = {"Loss/scores/real": real_logits.detach(), "Loss/scores/fake": fake_logits.detach(),
                 "Loss/signs/real": real_logits.detach().sign()}
        if self.kind == "ns":
            loss = F.softplus(fake_logits) + F.softplus(-real_logits)
        else:
            loss = fake_logits - real_logits
            if self.kind == "wgan-gp":
                eps = torch.rand([len(real), 1, 1, 1], device=real.device)
                gp = gradient_penalty(self.D, real, fake, real_c, eps)
                stats["Loss/D/gp"] = gp.detach()
                loss = loss + self.gp_weight * gp
            if self.drift > 0:
                loss = loss + self.drift * real_logits.square()
        loss.mean().mul(gain).backward()
        stats["Loss/D/loss"] = loss.detach()
        return stats

    def regularizes(self, net: str) -> bool:
        return False

    def state_dict(self) -> Dict[str, torch.Tensor]:
        return {}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        pass


class ClippedRMSprop(torch.optim.RMSprop):
    """RMSprop whose every step ends by clamping each parameter into ``[-clip, clip]`` (WGAN's weight clipping)."""

    def __init__(self, params, lr: float = 5e-5, clip: float = 0.01, **kwargs):
        if not clip > 0:
            raise ValueError(f"clip must be > 0, got {clip}")
        super().__init__(params, lr=lr, **kwargs)
        with torch.no_grad():
            for group in self.param_groups:
                group["clip"] = float(clip)
                for p in group["params"]:
                    p.clamp_(-group["clip"], group["clip"])  # inside the box from the start

    @torch.no_grad()
    def step(self, closure=None):
        loss = super().step(closure)
        for group in self.param_groups:
            for p in group["params"]:
                p.clamp_(-group["clip"], group["clip"])
        return loss
