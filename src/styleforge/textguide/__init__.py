"""Text-guided generation and editing with CLIP (StyleCLIP's latent optimisation, text-derived directions).

- :mod:`.optimize`: :func:`optimize_latents` (W+ optimisation toward a prompt; generate and edit modes),
  :func:`start_latents` (mean latent, seeds, or given latents), :class:`TextGuideConfig` (StyleCLIP's defaults);
- :mod:`.direction`: :func:`text_direction` (prompt A -> prompt B as a W+ vector with metadata).

The CLIP model comes from :func:`styleforge.perceptual.clip.load_clip`; the generator from :mod:`styleforge.zoo`.
This package never imports another capability: the commands save a direction as a ``directions.Direction`` file.
"""

from .direction import METHODS, TextDirection, text_direction
from .optimize import MODES, TextGuideConfig, TextGuideResult, learning_rate, optimize_latents, start_latents

__all__ = ["METHODS", "MODES", "TextDirection", "TextGuideConfig", "TextGuideResult", "learning_rate",
           "optimize_latents", "start_latents", "text_direction"]
