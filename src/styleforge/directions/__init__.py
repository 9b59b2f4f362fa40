"""Latent editing: directions in W / W+, and the ways to find them.

- :mod:`.direction`: the :class:`Direction` type, ``.npy``/``.npz`` files, :func:`apply`, :func:`sweep`,
  :func:`condition` (InterFaceGAN's conditional manipulation), :func:`score`;
- :mod:`.edit`: a direction applied to latents at several strengths, written as strips, GIF/MP4 and latents;
- :mod:`.svm`: learn a direction with a linear SVM from labelled or scored latents (scikit-learn);
- :mod:`.sefa`: SeFa, closed-form factors of the style affines;
- :mod:`.ganspace`: GANSpace, streaming PCA of W;
- :mod:`.mixing`: style mixing with the official semantics and files;
- :mod:`.grids`: per-direction grids over seeds x strengths and an ``index.html``.

    from styleforge import zoo
    from styleforge.directions import load_direction, apply
    G, _ = zoo.load_generator("ffhq.pkl")
    ws = apply(ws, load_direction("age.npy"), strength=2.0, layers="0-7")
"""

from .direction import (Direction, apply, condition, layers_text, load_direction, load_directions, parse_layers,
                        save_directions, score, sweep)

__all__ = ["Direction", "apply", "condition", "layers_text", "load_direction", "load_directions", "parse_layers",
           "save_directions", "score", "sweep"]
