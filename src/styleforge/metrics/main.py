"""calc_metric: one metric of one generator against one real set; results as the official jsonl records."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Union

import numpy as np
import torch

from ..errors import StyleforgeError
from ..perceptual.detectors import detector_identity, load_detector
from ..utils.fileio import output_error
from ..utils.progress import Callback, reporter
from . import features as F
from .formulas import InceptionScore, MeanCov, frechet_distance, kernel_inception_distance, precision_recall
from .ppl import compute_ppl, lpips_distance
from .registry import MetricSpec, metric_spec

__all__ = ["MetricOptions", "MetricResult", "calc_metric", "append_jsonl", "format_time"]

_DETECTOR_OF = {"fid": "inception", "kid": "inception", "is": "inception", "pr": "vgg16", "ppl": "vgg16"}
_CALL_OF = {"fid": dict(return_features=True), "kid": dict(return_features=True), "pr": dict(return_features=True),
            "is": dict(no_output_bias=True)}


@dataclass(frozen=True)
class MetricOptions:
    """How metrics are computed (defaults: the official definitions).

    - ``resize``: ``legacy`` (the detector's own resize: the official numbers) or ``clean`` (clean-fid: PIL
      bicubic to 299 on the uint8 images, in float, before the detector); recorded with every result.
    - ``inception``, ``vgg16``: the detector files (path, cache name or URL; None: the official files from the
      cache); ``allow_download``: fetch a missing official file (None: ``STYLEFORGE_ALLOW_DOWNLOAD``).
    - ``cache_dir``: real-set statistics cache (None: ``$STYLEFORGE_CACHE/metrics``); ``use_cache=False``: none.
    - ``batch_size`` images per generator/detector call; ``device`` for the detectors and the generator's inputs.
    - ``seed``: fakes (z, labels, noise), KID subsets and PPL samples are drawn from it: a rerun gives the same
      number. ``truncation_psi`` (official: 1); ``noise_mode`` of the generator for FID/KID/PR/IS (official:
      ``random``, seeded here; PPL always uses ``const`` with re-drawn buffers, as official).
    - ``num_workers``: processes decoding the real images (0: in this process; the official code uses 3).
    - ``num_gen``: override the number of generated images / PPL samples (quick checks and tests only; the
      record's ``num_images`` says what was used).
    """

    resize: str = "legacy"
    inception: Optional[str] = None
    vgg16: Optional[str] = None
    allow_download: Optional[bool] = None
    cache_dir: Optional[Path] = None
    batch_size: int = 64
    device: Union[str, torch.device] = "cpu"
    seed: int = 0
    truncation_psi: float = 1.0
    noise_mode: str = "random"
    use_cache: bool = True
    num_gen: Optional[int] = None
    num_workers: int = 0

    def validate(self) -> "MetricOptions":
        if self.resize not in F.RESIZE_MODES:
            raise StyleforgeError(f"choose one of {', '.join(F.RESIZE_MODES)}", param="resize", value=self.resize)
        if int(self.num_workers) < 0:
            raise StyleforgeError("must be 0 or more", param="num_workers", value=self.num_workers,
                                  label="workers")
        if int(self.batch_size) < 1:
            raise StyleforgeError("must be at least 1", param="batch_size", value=self.batch_size,
                                  label="batch size")
        if self.noise_mode not in ("random", "const", "none"):
            raise StyleforgeError("choose one of random, const, none", param="noise_mode", value=self.noise_mode,
                                  label="noise mode")
        if self.num_gen is not None and int(self.num_gen) < 1:
            raise StyleforgeError("must be at least 1", param="num_gen", value=self.num_gen)
        return self


def format_time(seconds: float) -> str:
    """The official ``dnnlib.util.format_time``: ``42s``, ``3m 07s``, ``2h 05m 09s``, ``1d 02h 03m``."""
    s = int(np.rint(seconds))
    if s < 60:
        return f"{s}s"
    if s < 60 * 60:
        return f"{s // 60}m {s % 60:02}s"
    if s < 24 * 60 * 60:
        return f"{s // 3600}h {(s // 60) % 60:02}m {s % 60:02}s"
    return f"{s // 86400}d {(s // 3600) % 24:02}h {(s // 60) % 60:02}m"


@dataclass
class MetricResult:
    """One metric's result: ``results`` as the official keys (``fid50k_full``; ``pr50k3_full_precision`` /
    ``_recall``; ``is50k_mean`` / ``_std``), and how it was computed."""

    metric: str
    results: Dict[str, float]
    total_time: float
    resize: str
    num_images: Dict[str, int]
    detector: str
    snapshot: Optional[str] = None
    timestamp: float = field(default_factory=time.time)

    def as_json(self) -> Dict[str, Any]:
        """The official jsonl record (same keys, same order), plus ``resize``, ``detector`` and ``num_images``."""
        return {
            "results": dict(self.results), "metric": self.metric, "total_time": self.total_time,
            "total_time_str": format_time(self.total_time), "num_gpus": 1, "snapshot_pkl": self.snapshot,
            "timestamp": self.timestamp, "resize": self.resize, "detector": self.detector,
            "num_images": dict(self.num_images),
        }


def append_jsonl(result: MetricResult, path_or_dir: Union[str, os.PathLike]) -> Path:
    """Append ``result`` as one line to ``metric-<name>.jsonl`` in a folder (or to the given ``.jsonl`` file),
    with one write and an fsync, so concurrent writers never interleave within a line."""
    path = Path(path_or_dir)
    if path.suffix != ".jsonl" or path.is_dir():
        path = path / f"metric-{result.metric}.jsonl"
    line = (json.dumps(result.as_json()) + "\n").encode()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
        try:
            os.write(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as e:
        raise output_error(path, e) from None
    return path


# -- the pieces -------------------------------------------------------------------------------------------------


def _open_data(data, G, spec: MetricSpec, stack: contextlib.ExitStack):
    c_dim = int(getattr(G, "c_dim", 0))
    if data is None:
        if spec.needs_reals or c_dim > 0:
            why = "the real images" if spec.needs_reals else "the labels of a conditional network"
            raise StyleforgeError(f"{spec.name} needs a dataset ({why})", param="data", label="dataset")
        return None
    if isinstance(data, (str, os.PathLike)):
        from ..data.dataset import ImageDataset

        ds = ImageDataset(data, use_labels=c_dim > 0)
        stack.callback(ds.close)
    else:
        ds = data
    res, ch = int(getattr(G, "img_resolution")), int(getattr(G, "img_channels"))
    if ds.resolution != res:
        raise StyleforgeError(
            f"{ds.path}: images are {ds.resolution}x{ds.resolution} but the network makes {res}x{res}; "
            f"use a dataset of the network's resolution", param="data", label="dataset")
    if ds.num_channels != ch:
        def kind(n):
            return {1: "grayscale", 3: "RGB"}.get(n, f"{n}-channel")
        raise StyleforgeError(
            f"{ds.path}: images are {kind(ds.num_channels)} but the network makes {kind(ch)} images; "
            f"use a dataset of the network's channel count", param="data", label="dataset")
    if c_dim > 0 and (not ds.has_labels or ds.label_dim != c_dim):
        have = f"{ds.label_dim} label values" if ds.has_labels else "no labels"
        raise StyleforgeError(
            f"{ds.path}: the network is conditional ({c_dim} label values) but the dataset has {have}; "
            f"use the dataset it was trained on", param="data", label="dataset")
    return ds


def _label_source(ds) -> Optional[Callable[[np.random.RandomState], np.ndarray]]:
    if ds is None or not ds.has_labels:
        return None
    return lambda rng: ds.get_label(int(rng.randint(len(ds))))


def _noise_rng(device) -> contextlib.AbstractContextManager:
    dev = torch.device(device)
    return torch.random.fork_rng(devices=[dev.index or 0] if dev.type == "cuda" else [])


def calc_metric(name: str, G: torch.nn.Module, data, *, options: MetricOptions = MetricOptions(),
                detectors: Optional[Dict[str, torch.nn.Module]] = None, callback: Optional[Callback] = None,
                snapshot: Optional[str] = None, distance: Optional[Callable] = None) -> MetricResult:
    """Compute metric ``name`` (see :data:`~styleforge.metrics.METRIC_NAMES`) of generator ``G`` against ``data``
    (a dataset path, zip or folder, or an open :class:`~styleforge.data.dataset.ImageDataset`; None for IS/PPL of
    an unconditional network).

    ``detectors``: ``{"inception": module, "vgg16": module}`` to use instead of loading the files (a caller that
    evaluates many generators passes one dict: detectors loaded here are added to it). Progress and cache hits go to
    ``callback``. ``snapshot``: the network file named in the record. ``distance``: PPL's distance
    ``(img0, img1) -> [N]`` instead of the VGG16 LPIPS one (tests). ``G`` runs in eval mode and is returned in
    the mode it came in, with its noise buffers unchanged.
    """
    spec = metric_spec(name)
    opts = options.validate()
    rep = reporter(callback)
    t0 = time.time()
    detectors = detectors if detectors is not None else {}
    num_gen = int(opts.num_gen) if opts.num_gen is not None else spec.num_gen
    kind = _DETECTOR_OF[spec.kind]
    with contextlib.ExitStack() as stack:
        if G.training:  # sample as in eval mode (no w_avg tracking), and give G back as it came
            stack.callback(G.train, True)
            G.eval()
        ds = _open_data(data, G, spec, stack)
        det = None
        if spec.kind != "ppl" or distance is None:
            det = detectors.get(kind)
            if det is None:
                det = detectors[kind] = load_detector(kind, getattr(opts, kind), opts.allow_download, opts.device,
                                                      rep)
        det_name = _describe(det) if det is not None else "custom distance"
        labels = _label_source(ds)
        g_device = next((p.device for p in G.parameters()), torch.device(opts.device))
        num_images: Dict[str, int] = {}

        if spec.kind == "ppl":
            p = spec.params
            dist = distance if distance is not None else lpips_distance(det)
            value = compute_ppl(G, num_gen, epsilon=p["epsilon"], space=p["space"], sampling=p["sampling"],
                                crop=p["crop"], batch_size=p["batch_size"], distance=dist, label_source=labels,
                                seed=opts.seed, device=g_device, reporter=rep)
            results = {spec.name: value}
            num_images["fake"] = num_gen
        else:
            call = _CALL_OF[spec.kind]
            tmpdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="styleforge-metrics-")))
            cache = F.RealCache((opts.cache_dir or F.default_cache_dir()) if opts.use_cache else None, rep)
            real = None
            if spec.needs_reals:
                # "_full": the whole set (up to the official cap); otherwise as many reals as fakes
                cap = spec.max_real if spec.full else num_gen
                n_real = len(ds) if cap is None else min(len(ds), cap)
                num_images["real"] = n_real
                real = _reals(spec, ds, det, call, n_real, opts, cache, stack, tmpdir, rep)
            num_images["fake"] = num_gen
            fake = _fakes(spec, G, det, call, num_gen, labels, opts, g_device, tmpdir, rep)
            results = _finish(spec, real, fake, opts)
    resize = opts.resize if spec.kind != "ppl" else "legacy"  # PPL has its own (official) box downsampling
    return MetricResult(spec.name, results, time.time() - t0, resize, num_images, det_name, snapshot)


def _describe(det) -> str:
    describe = getattr(det, "describe", None)
    if callable(describe):
        return str(describe())
    return f"{type(det).__name__} (sha256 {detector_identity(det)[:12]})"


def _stream(batches, det, call, opts, sink, advance, kind) -> None:
    size = F.CLEAN_SIZES[kind]
    for images in batches:
        sink.update(F.run_detector(det, images, call, opts.resize, opts.device, size))
        advance(images.shape[0])


def _reals(spec, ds, det, call, n, opts, cache, stack, tmpdir, rep):
    what = f"{_DETECTOR_OF[spec.kind]}-{'meancov' if spec.kind == 'fid' else 'features'}"
    if spec.kind == "fid" and n < 2:
        raise StyleforgeError(f"{ds.path}: FID needs at least 2 real images (has {len(ds)})", param="data",
                              label="dataset")
    key = cache.key(ds, det, call, opts.resize, n, what)
    stage = f"real images ({_DETECTOR_OF[spec.kind]})"
    if spec.kind == "fid":
        path = cache.path(ds, key, what, ".npz")
        if cache.hit(path):
            return F.load_meancov(path)
        acc = MeanCov()
        with rep.stage(stage, total=n, unit="img") as advance:
            _stream(F.real_batches(ds, n, opts.batch_size, opts.num_workers), det, call, opts, acc, advance,
                    _DETECTOR_OF[spec.kind])
        mu, sigma = acc.mean(), acc.cov()
        with cache.writing(path) as tmp:
            if tmp is not None:
                F.save_meancov(tmp, mu, sigma, acc.count)
        return mu, sigma, acc.count
    dtype = np.float16 if spec.kind == "pr" else np.float32
    path = cache.path(ds, key, what, ".npy")
    if cache.hit(path):
        return np.load(path, mmap_mode="r")
    with cache.writing(path) as tmp:
        sink = F.FeatureFile(tmp if tmp is not None else tmpdir / "real.npy", n, dtype)
        with rep.stage(stage, total=n, unit="img") as advance:
            _stream(F.real_batches(ds, n, opts.batch_size, opts.num_workers), det, call, opts, sink, advance,
                    _DETECTOR_OF[spec.kind])
        sink.array()  # (closes the file; checks every row was written)
    return np.load(path if path is not None else tmpdir / "real.npy", mmap_mode="r")


def _fakes(spec, G, det, call, n, labels, opts, g_device, tmpdir, rep):
    rng = np.random.RandomState(opts.seed)
    if spec.kind == "fid":
        sink = MeanCov()
    elif spec.kind == "is":
        sink = InceptionScore(n, int(spec.params["num_splits"]))
    else:
        sink = F.FeatureFile(tmpdir / "fake.npy", n, np.float16 if spec.kind == "pr" else np.float32)
    batches = F.fake_batches(G, n, opts.batch_size, rng, labels, opts.truncation_psi, opts.noise_mode, g_device)
    with _noise_rng(g_device), rep.stage(f"generated images ({_DETECTOR_OF[spec.kind]})", total=n,
                                         unit="img") as advance:
        torch.manual_seed(opts.seed)
        _stream(batches, det, call, opts, sink, advance, _DETECTOR_OF[spec.kind])
    if isinstance(sink, F.FeatureFile):
        return sink.array()
    return sink


def _finish(spec, real, fake, opts) -> Dict[str, float]:
    p = spec.params
    if spec.kind == "fid":
        mu_r, sigma_r, _ = real
        if fake.count < 2:
            raise StyleforgeError(f"FID needs at least 2 generated images (got {fake.count})", param="num_gen")
        return {spec.name: frechet_distance(fake.mean(), fake.cov(), mu_r, sigma_r)}
    if spec.kind == "kid":
        rng = np.random.RandomState([opts.seed, 1])
        return {spec.name: kernel_inception_distance(real, fake, int(p["num_subsets"]), int(p["max_subset_size"]),
                                                     rng)}
    if spec.kind == "pr":
        prec, rec = precision_recall(real, fake, int(p["nhood_size"]), int(p["row_batch_size"]),
                                     int(p["col_batch_size"]), opts.device)
        return {f"{spec.name}_precision": prec, f"{spec.name}_recall": rec}
    mean, std = fake.result()
    return {f"{spec.name}_mean": mean, f"{spec.name}_std": std}


def with_options(options: MetricOptions, **changes) -> MetricOptions:
    """A copy of ``options`` with ``changes`` (a convenience for callers)."""
    return replace(options, **changes)
