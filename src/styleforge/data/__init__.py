"""Datasets for training, metrics and the baselines: the official StyleGAN2-ADA layout, read from a zip or folder.

* :mod:`.files` - the files of a folder or zip (listed, read lazily, picklable), PNG headers, the layout's names;
* :mod:`.labels` - ``dataset.json`` labels and class subfolders;
* :mod:`.dataset` - :class:`~styleforge.data.dataset.ImageDataset` (``(uint8 CHW, float32 label)`` items) and
  :func:`~styleforge.data.dataset.open_dataset`.

The converter that writes the layout (``dataset_tool``) lives with training (:mod:`styleforge.train.dataset_tool`).
Import the submodules directly; this file imports nothing, so ``import styleforge.data`` stays cheap.
"""
