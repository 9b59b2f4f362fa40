"""Training: dataset tool and reader (``dataset``), ADA augmentation (``augment``), presets, the StyleGAN2 loss
and the training loop with exact resume and torchrun support (``presets``, ``loss``, ``loop``).

Import the submodules directly (``from styleforge.train.dataset import convert_dataset, ImageDataset``); this
package file deliberately imports nothing, so ``import styleforge.train`` stays cheap.
"""
