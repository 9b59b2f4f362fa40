"""GAN metrics with the official StyleGAN2-ADA definitions: FID, KID, precision/recall, IS, PPL.

    from styleforge import zoo
    from styleforge.metrics import MetricOptions, append_jsonl, calc_metric
    G, path = zoo.load_generator("ffhq.pkl")
    result = calc_metric("fid50k_full", G, "ffhq.zip", options=MetricOptions(device="cuda"))
    append_jsonl(result, "runs/00003-x")   # -> runs/00003-x/metric-fid50k_full.jsonl

**Names.** The official twelve keep their names and definitions: ``fid50k_full``, ``kid50k_full``,
``pr50k3_full``, ``ppl2_wend``, ``is50k``, ``fid50k``, ``kid50k``, ``pr50k3``, ``ppl_zfull``, ``ppl_wfull``,
``ppl_zend``, ``ppl_wend`` (50,000 fakes or PPL samples). Small-sample variants say their count in the name, so
nobody mistakes them for the 50k figures: ``fid10k``, ``fid5k``, ``fid1k`` (and ``kid…``, ``is…``; ``pr10k3``,
``pr5k3``, ``pr1k3``), each with a ``_full`` form where the official one has it, and ``ppl2_wend_10k``,
``ppl_zfull_5k``, ``ppl_wend_1k``... (the official PPL name + ``_<count>k``). ``_full`` means all reals (up to the
official caps: KID 1,000,000, PR 200,000); without it the reals are the first N images, N = the number of fakes
(the official rule). A dataset smaller than that is used whole, as official; a set too small for the formula (KID:
2 images; PR: k + 1; IS: 10 fakes) is a :class:`~styleforge.errors.StyleforgeError`.

**Definitions** (:mod:`.formulas`, :mod:`.features`, :mod:`.ppl`): fakes from z ~ N(0, I) with random real labels,
quantised ``(img * 127.5 + 128).clamp(0, 255)`` to uint8; reals uint8 as stored (grayscale repeated to 3
channels, no x-flip); NVIDIA's Inception file for FID/KID/IS and VGG16 file for PR/PPL (or any module of the same
call: :func:`load_detector`, :func:`styleforge.perceptual.save_detector_standin`). ``resize="clean"`` switches to
clean-fid's PIL-bicubic resize; the mode is recorded with each result.

**Memory and time**: FID statistics are float64 running sums; KID and PR features go to .npy files read back
memory-mapped; PR distances are computed in bounded blocks; IS streams per split; so memory does not grow with
N. Real-set statistics are cached (keyed by the dataset's content, detector, resize mode, count), written
atomically. Everything random is drawn from ``options.seed``: a rerun gives the same number.
"""

from ..perceptual.detectors import load_detector
from .formulas import (
    InceptionScore, MeanCov, filtered_mean, frechet_distance, kernel_inception_distance, precision_recall,
)
from .main import MetricOptions, MetricResult, append_jsonl, calc_metric, format_time
from .features import quantize, sample_images
from .ppl import compute_ppl, lpips_distance, ppl_distances, ppl_latents, slerp
from .registry import METRIC_NAMES, METRICS, OFFICIAL_NAMES, MetricSpec, check_metrics, metric_spec

__all__ = [
    "METRIC_NAMES", "OFFICIAL_NAMES", "METRICS", "MetricSpec", "check_metrics", "metric_spec",
    "MetricOptions", "MetricResult", "calc_metric", "append_jsonl", "load_detector", "format_time",
    "sample_images", "quantize",
    "MeanCov", "frechet_distance", "kernel_inception_distance", "InceptionScore", "precision_recall",
    "filtered_mean", "compute_ppl", "lpips_distance", "ppl_distances", "ppl_latents", "slerp",
]
