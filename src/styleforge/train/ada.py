"""The ADA controller (Karras et al. 2020, appendix B): tunes the augmentation probability ``p`` from the
discriminator's overfitting heuristic ``r_t = E[sign(D(real))]``.

:class:`AdaptiveP` accumulates ``sign(D(real))`` over the real batches; every ``interval`` steps it moves ``p`` by
``sign(r_t - target) * images / (ada_kimg * 1000)`` in float32 (as the official loop updates its float32 buffer),
never below 0 (no upper clamp).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Dict, Mapping, Optional, Tuple, Union

import torch

if TYPE_CHECKING:
    from .augment import AugmentPipe


class AdaptiveP:
    """The ADA controller: tunes ``p`` so that the overfitting heuristic ``r_t = E[sign(D(real))]`` tracks ``target``.

    Usage in a training loop::

        ada = AdaptiveP(pipe, target=0.6, interval=4, ada_kimg=500)
        ...
        real_logits = D(pipe(real_images))
        ada.accumulate(real_logits)          # every D step that sees reals
        ...
        ada.step(batch_size)                 # once per training iteration (after the optimiser steps)

    Every ``interval`` calls of :meth:`step`, ``r_t`` becomes the mean sign accumulated since the last adjustment
    and ``p += sign(r_t - target) * images / (ada_kimg * 1000)`` in float32 (``images`` = sum of ``batch_size``
    over those calls, = batch * interval for a constant batch), clamped to ``>= 0``. An interval without
    accumulated signs leaves ``p`` unchanged. The new ``p`` is written into ``pipe.p`` when a pipe is attached.
    ``state_dict`` holds plain numbers, including the partial interval, so a resumed run continues exactly.

    For multi-process training reduce the accumulators across ranks before :meth:`step`
    (see :meth:`pending`/:meth:`set_pending`), or feed every rank's logits to one controller.
    """

    def __init__(
        self,
        pipe: Optional[AugmentPipe] = None,
        target: float = 0.6,
        interval: int = 4,
        ada_kimg: float = 500.0,
        p: Optional[float] = None,
    ):
        if interval < 1:
            raise ValueError("interval must be >= 1")
        if ada_kimg <= 0:
            raise ValueError("ada_kimg must be > 0")
        self.pipe = pipe
        self.target = float(target)
        self.interval = int(interval)
        self.ada_kimg = float(ada_kimg)
        if p is None:
            p = float(pipe.p) if pipe is not None else 0.0
        self._p = max(float(p), 0.0)
        self._sign_sum: Union[float, torch.Tensor] = 0.0  # tensor while accumulating (no device sync per batch)
        self._sign_count = 0
        self._steps = 0  # steps since the last adjustment
        self._images = 0  # images since the last adjustment
        self.r_t: Optional[float] = None  # last measured heuristic (None before the first adjustment)
        self.num_adjustments = 0
        self._push()

    # -- accessors ---------------------------------------------------------------------------------------

    @property
    def p(self) -> float:
        return self._p

    @p.setter
    def p(self, value: float) -> None:
        self._p = max(float(value), 0.0)
        self._push()

    def _push(self) -> None:
        if self.pipe is not None:
            self.pipe.set_p(self._p)

    def adjustment_size(self, images: int) -> float:
        return images / (self.ada_kimg * 1000.0)

    # -- accumulation --------------------------------------------------------------------------------------

    def accumulate(self, real_logits: torch.Tensor) -> None:
        """Add ``sign(real_logits)`` (any shape; one entry per real image) to the running interval."""
        s = torch.sign(real_logits.detach().float()).sum()
        self._sign_sum = self._sign_sum + s
        self._sign_count += int(real_logits.numel())

    def pending(self) -> Tuple[float, int]:
        """(sum of signs, number of logits) accumulated in the current interval."""
        return float(self._sign_sum), self._sign_count

    def set_pending(self, sign_sum: float, count: int) -> None:
        """Overwrite the accumulators (e.g. with values all-reduced across processes)."""
        self._sign_sum = float(sign_sum)
        self._sign_count = int(count)

    def step(self, batch_size: int) -> bool:
        """Count one training iteration of ``batch_size`` images; adjust p at interval boundaries.

        Returns True when p was adjusted on this call.
        """
        self._steps += 1
        self._images += int(batch_size)
        if self._steps < self.interval:
            return False
        adjusted = False
        if self._sign_count > 0:
            r_t = float(self._sign_sum) / self._sign_count
            self.r_t = r_t
            direction = (r_t > self.target) - (r_t < self.target)
            adjust = direction * self.adjustment_size(self._images)
            # in float32, as the official loop adds to the pipe's float32 buffer (no upper clamp)
            self._p = float((torch.tensor(self._p, dtype=torch.float32) + adjust).clamp(min=0))
            self.num_adjustments += 1
            adjusted = True
            self._push()
        self._sign_sum = 0.0
        self._sign_count = 0
        self._steps = 0
        self._images = 0
        return adjusted

    # -- state ---------------------------------------------------------------------------------------------

    def state_dict(self) -> Dict[str, Any]:
        return {
            "p": self._p,
            "target": self.target,
            "interval": self.interval,
            "ada_kimg": self.ada_kimg,
            "sign_sum": float(self._sign_sum),
            "sign_count": self._sign_count,
            "steps": self._steps,
            "images": self._images,
            "r_t": self.r_t,
            "num_adjustments": self.num_adjustments,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.target = float(state["target"])
        self.interval = int(state["interval"])
        self.ada_kimg = float(state["ada_kimg"])
        self._sign_sum = float(state["sign_sum"])
        self._sign_count = int(state["sign_count"])
        self._steps = int(state["steps"])
        self._images = int(state["images"])
        self.r_t = None if state.get("r_t") is None else float(state["r_t"])
        self.num_adjustments = int(state.get("num_adjustments", 0))
        self.p = float(state["p"])

    def __repr__(self) -> str:
        r = "None" if self.r_t is None else f"{self.r_t:.3f}"
        return (
            f"AdaptiveP(p={self._p:.4f}, r_t={r}, target={self.target}, interval={self.interval}, "
            f"ada_kimg={self.ada_kimg:g})"
        )
