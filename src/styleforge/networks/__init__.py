"""StyleGAN2-ADA-compatible networks in pure PyTorch, and their checkpoint I/O.

Public API::

    from styleforge.networks import Generator, GeneratorConfig, Discriminator, load_network, save_networks
"""

from .checkpoint import convert_network, load_network, load_networks, save_networks
from .config import build_network, network_spec, register_network, registered_archs
from .discriminator import Discriminator, DiscriminatorConfig
from .generator import Generator, GeneratorConfig, SynthesisConfig
from .layers import MappingConfig

__all__ = [
    "Generator", "GeneratorConfig", "SynthesisConfig", "MappingConfig", "Discriminator", "DiscriminatorConfig",
    "build_network", "network_spec", "register_network", "registered_archs",
    "load_network", "load_networks", "save_networks", "convert_network",
]
