"""Training: :func:`~styleforge.train.loop.train` and what it is made of.

* ``loop`` - ``train()``: options, run folder, fine-tuning or resume, one process or many;
* ``trainer`` - the :class:`~styleforge.train.trainer.Trainer` (steps, snapshots, exact resume), the data order;
* ``registry`` - the models it trains, by name (networks + loss; ``stylegan2`` built in);
* ``distributed`` (torchrun / spawned ranks), ``state`` (resume file, RNG, stop flag), ``rundir`` (folders, logs,
  stats, grids);
* ``presets`` (``--cfg`` and the resolved options), ``loss`` (StyleGAN2), ``augment`` / ``augment_ops`` / ``ada``
  (ADA), ``dataset_tool`` (the converter; the reader is :mod:`styleforge.data`).

Import the submodules directly; this package file deliberately imports nothing, so ``import styleforge.train`` stays
cheap.
"""
