"""Perceptual feature networks shared by the projector, the metrics and CLIP guidance.

- :mod:`~styleforge.perceptual.features`: the :class:`FeatureNet` interface, NVIDIA's VGG16 LPIPS file, a
  discriminator's features, a pixel loss;
- :mod:`~styleforge.perceptual.scripted`: runs a TorchScript file's graph eagerly (never as shipped code we
  cannot check) with styleforge's fast convolutions;
- :mod:`~styleforge.perceptual.standins`: random conv nets with the real files' call signature, for tests
  (the VGG16 LPIPS file's, and the metrics detectors': :func:`save_detector_standin`);
- :mod:`~styleforge.perceptual.detectors`: the metrics' detector files (Inception, VGG16), :func:`load_detector`;
- :mod:`~styleforge.perceptual.similarity`: PSNR and SSIM.
"""

from .features import DiscriminatorFeatures, FeatureNet, PixelLoss, VGG16LPIPS, area_downsample, lpips_normalize
from .similarity import psnr, ssim
from .detectors import DETECTOR_KINDS, Detector, detector_identity, load_detector
from .standins import INCEPTION_SCALE, VGG16_LAYOUT, DetectorStandIn, RandomConvFeatures, save_detector_standin

__all__ = [
    "FeatureNet", "VGG16LPIPS", "DiscriminatorFeatures", "PixelLoss", "RandomConvFeatures", "VGG16_LAYOUT",
    "area_downsample", "lpips_normalize", "psnr", "ssim",
    "DETECTOR_KINDS", "Detector", "DetectorStandIn", "INCEPTION_SCALE", "detector_identity", "load_detector", "save_detector_standin",
]
