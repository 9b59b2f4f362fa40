"""Training: dataset preparation and reading (``styleforge.train.dataset``); the training loop comes later.

Import the submodules directly (``from styleforge.train.dataset import convert_dataset, ImageDataset``); this
package file deliberately imports nothing, so ``import styleforge.train`` stays cheap.
"""
