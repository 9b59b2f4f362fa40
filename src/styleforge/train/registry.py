"""The models the training loop can train, by name: how to build the networks and the loss.

The :class:`~styleforge.train.trainer.Trainer` owns everything that is not particular to a model (data order,
re-seeding, the lazy-regularisation phases and their Adam optimisers, G_ema, ADA, gradient averaging over processes,
snapshots, exact resume, stop on SIGTERM); a :class:`Model` supplies the rest. ``stylegan2`` is registered here;
SEGAN and the GAN baselines register theirs with :func:`register_model` (and list their module in
:data:`MODEL_MODULES`, so that a spawned process finds them too)::

    register_model(Model("dcgan", build_networks=..., build_loss=...))
    train(outdir, data, model="dcgan", ...)

What a model must provide:

* ``build_networks(opts) -> {"G": generator, "D": discriminator}``, from ``opts.G`` / ``opts.D`` (plain dicts) and
  the dataset fields of ``opts``. The trainer seeds torch with ``opts.seed`` first, moves them to the device and
  makes ``G_ema`` a copy of G. The generator has ``z_dim``; both networks are saved in the snapshots, so they are
  registered with :func:`styleforge.networks.config.register_network` (``arch`` + ``config``).
* ``build_loss(G, D, augment_pipe, opts, reduce_mean) -> Loss`` (below). ``reduce_mean`` averages a tensor over
  processes (None with one process).
* optional ``configure(opts) -> opts``: the model's network settings for a new run (``opts.G`` / ``opts.D``), from
  the resolved preset; default: the preset's StyleGAN2 configs unchanged.
* optional ``sample(G, z, c, opts) -> images`` for the snapshot grids (default ``G(z, c)``), and
  ``shared_buffers(G) -> [tensors]``: buffers that evolve in training and are averaged over processes after every
  step (StyleGAN2's ``w_avg``).
* optional ``optimizer(net, module, opts) -> torch.optim.Optimizer`` for ``net`` "G" or "D" (default: the lazy-
  regularisation Adam of StyleGAN2, from ``opts.lrate`` / ``opts.betas`` / ``opts.eps``). Its state is saved and
  resumed like Adam's; work after each step (WGAN's weight clipping) belongs in its ``step()``.
* optional ``intervals(opts) -> {"Gmain": n, ...}``: run a main phase only every n-th step (WGAN's n_critic: G
  once per n critic steps). Main phases always get gain 1 (the regularisers' gain is their interval).
* optional ``options``: the model's own settings and their defaults (SEGAN's ``mode``), given by the user as
  ``TrainSettings.model_opts`` and checked by ``check_options(opts_dict) -> opts_dict`` (one-line errors); they
  reach ``configure`` as ``opts.model_opts``, and ``--resume auto`` continues only a run with the same values.
* optional ``on_step(networks, cur_nimg, opts)`` before every step, with ``{"G", "D", "G_ema"}`` and the images
  shown so far: schedules that follow training progress (ProGAN's resolution and fade-in, kept in buffers so
  that snapshots and resume states carry them).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Protocol

import torch
from torch import nn

from ..errors import StyleforgeError
from .presets import TrainingOptions

ReduceMean = Optional[Callable[[torch.Tensor], torch.Tensor]]


class Loss(Protocol):
    """What the trainer asks of a loss.

    ``accumulate_gradients(phase, real_img, real_c, gen_z, gen_c, gain)`` backpropagates the terms of phase
    ``Gmain``, ``Greg``, ``Dmain`` or ``Dreg`` (reals in [-1, 1]; labels None for unconditional runs) scaled by
    ``gain`` into whichever parameters require grad, and returns the logged per-sample values (``Loss/G/loss``,
    ``Loss/D/loss``...; ``Loss/signs/real`` feeds ADA). ``regularizes(net)``: whether ``<net>reg`` has anything to
    do (a phase without it never runs). ``state_dict()``: tensors that evolve in training, saved in the resume state
    (top-level entries, e.g. ``pl_mean``); ``load_state_dict(state)`` picks them from a loaded state.
    """

    def accumulate_gradients(self, phase: str, real_img: torch.Tensor, real_c: Optional[torch.Tensor],
                             gen_z: torch.Tensor, gen_c: Optional[torch.Tensor],
                             gain: float = 1.0) -> Dict[str, torch.Tensor]: ...

    def regularizes(self, net: str) -> bool: ...

    def state_dict(self) -> Dict[str, torch.Tensor]: ...

    def load_state_dict(self, state: Dict[str, Any]) -> None: ...


def _same(opts: TrainingOptions) -> TrainingOptions:
    return opts


def _call_G(G: nn.Module, z: torch.Tensor, c: Optional[torch.Tensor], opts: TrainingOptions) -> torch.Tensor:
    return G(z, c)


def _no_buffers(G: nn.Module) -> List[torch.Tensor]:
    return []


def _no_intervals(opts: TrainingOptions) -> Dict[str, int]:
    return {}


@dataclass(frozen=True)
class Model:
    """A trainable model: see the module docstring."""

    name: str
    build_networks: Callable[[TrainingOptions], Dict[str, nn.Module]]
    build_loss: Callable[[nn.Module, nn.Module, Optional[nn.Module], TrainingOptions, ReduceMean], Loss]
    configure: Callable[[TrainingOptions], TrainingOptions] = _same
    sample: Callable[[nn.Module, torch.Tensor, Optional[torch.Tensor], TrainingOptions], torch.Tensor] = _call_G
    shared_buffers: Callable[[nn.Module], List[torch.Tensor]] = _no_buffers
    optimizer: Optional[Callable[[str, nn.Module, TrainingOptions], torch.optim.Optimizer]] = None
    intervals: Callable[[TrainingOptions], Dict[str, int]] = _no_intervals
    on_step: Optional[Callable[[Dict[str, nn.Module], int, TrainingOptions], None]] = None
    options: Dict[str, Any] = field(default_factory=dict)
    check_options: Optional[Callable[[Dict[str, Any]], Dict[str, Any]]] = None

    def resolve_options(self, given: Optional[Dict[str, Any]]) -> Dict[str, Any]:
        """The model's options: its defaults updated with ``given`` (unknown names refused, then checked)."""
        given = dict(given or {})
        unknown = sorted(set(given) - set(self.options))
        if unknown:
            what = f"its options are {', '.join(sorted(self.options))}" if self.options else "it has no options"
            raise StyleforgeError(f"{', '.join(unknown)} does not apply to model {self.name} ({what})",
                                  param=unknown[0])
        out = {**self.options, **given}
        return self.check_options(out) if self.check_options is not None else out


_MODELS: Dict[str, Model] = {}
MODEL_MODULES: Dict[str, str] = {
    **{name: "styleforge.baselines.models" for name in ("gan", "cgan", "dcgan", "cdcgan", "wgan", "wgan-gp",
                                                        "dcgan-style", "progan")},
    "segan": "styleforge.segan.train",
}
"""Model name -> the module that registers it, imported on first use (models living outside this package)."""


def register_model(model: Model) -> Model:
    if model.name in _MODELS and _MODELS[model.name] is not model:
        raise ValueError(f"training model {model.name!r} is already registered")
    _MODELS[model.name] = model
    return model


def model_names() -> List[str]:
    """The models registered so far (and those :data:`MODEL_MODULES` would register)."""
    return sorted(set(_MODELS) | set(MODEL_MODULES))


def get_model(name: str) -> Model:
    if name not in _MODELS and name in MODEL_MODULES:
        importlib.import_module(MODEL_MODULES[name])
    if name not in _MODELS:
        raise StyleforgeError(f"unknown model; use one of {', '.join(model_names())}", param="model", value=name)
    return _MODELS[name]


# ---------------------------------------------------------------------------------------------------------------------
# StyleGAN2 (the preset's G and D configs; the loss of styleforge.train.loss).


def _stylegan2_networks(opts: TrainingOptions) -> Dict[str, nn.Module]:
    from ..networks import Discriminator, DiscriminatorConfig, Generator, GeneratorConfig

    return {"G": Generator(GeneratorConfig.from_dict(opts.G)),
            "D": Discriminator(DiscriminatorConfig.from_dict(opts.D))}


def _stylegan2_loss(G, D, augment_pipe, opts: TrainingOptions, reduce_mean: ReduceMean) -> Loss:
    from .loss import StyleGAN2Loss

    return StyleGAN2Loss(G, D, augment_pipe, r1_gamma=opts.gamma, style_mixing_prob=opts.style_mixing_prob,
                         pl_weight=opts.pl_weight, pl_batch_shrink=opts.pl_batch_shrink, pl_decay=opts.pl_decay,
                         fp16=opts.fp16, reduce_mean=reduce_mean)


def _stylegan2_sample(G, z, c, opts: TrainingOptions) -> torch.Tensor:
    return G(z, c, noise_mode="const", fp16=opts.fp16)


def _stylegan2_buffers(G) -> List[torch.Tensor]:
    return [G.mapping.w_avg] if hasattr(G.mapping, "w_avg") else []


register_model(Model("stylegan2", _stylegan2_networks, _stylegan2_loss, sample=_stylegan2_sample,
                     shared_buffers=_stylegan2_buffers))
