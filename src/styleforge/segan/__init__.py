"""SEGAN: StyleGAN2 with EigenGAN-style linear subspaces in its synthesis layers (``--cfg segan --mode 0..3``).

* :mod:`.networks`: the subspace layer and the SEGAN generator (registered as ``segan.generator``, so its
  checkpoints load everywhere through :mod:`styleforge.zoo`);
* :mod:`.train`: the ``segan`` training model on the shared trainer (StyleGAN2 loss + orthogonality term);
* :mod:`.control`: semantic-control grids (layer x coordinate x value) and coordinates as edit Directions;
* :mod:`.compare`: train the four modes on the same data and tabulate FID / PPL.
"""

from .networks import DEFAULT_MODE, MODES, SeganGenerator, SeganGeneratorConfig, Subspace, SubspaceConfig, is_segan

__all__ = ["DEFAULT_MODE", "MODES", "SeganGenerator", "SeganGeneratorConfig", "Subspace", "SubspaceConfig",
           "is_segan"]
