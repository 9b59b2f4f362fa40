"""styleforge: a StyleGAN2-ADA toolkit in pure PyTorch (generate, project, edit, train, evaluate)."""

__version__ = "0.1.0"
