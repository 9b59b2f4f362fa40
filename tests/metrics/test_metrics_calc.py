"""calc_metric end to end: a tiny random StyleGAN2, a folder of tiny PNGs and the TorchScript detector stand-in."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import tiny_generator
from metrics_helpers import png_folder
from styleforge.errors import StyleforgeError
from styleforge.metrics import METRIC_NAMES, MetricOptions, append_jsonl, calc_metric, check_metrics, load_detector
from styleforge.perceptual import save_detector_standin


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("metrics")
    data = png_folder(root / "data", n=20, res=16)
    det_file = save_detector_standin(root / "standin.pt")
    det = load_detector("inception", det_file)
    G = tiny_generator(res=16)
    return dict(root=root, data=data, det_file=det_file, dets={"inception": det, "vgg16": det}, G=G)


def _opts(setup, **kw):
    kw.setdefault("num_gen", 40)
    kw.setdefault("cache_dir", setup["root"] / "cache")
    return MetricOptions(**kw)


@pytest.mark.parametrize("name", ["fid1k", "kid1k_full"])
def test_fid_kid_end_to_end_finite_and_seeded(setup, name):
    a = calc_metric(name, setup["G"], setup["data"], options=_opts(setup), detectors=setup["dets"])
    b = calc_metric(name, setup["G"], setup["data"], options=_opts(setup), detectors=setup["dets"])
    c = calc_metric(name, setup["G"], setup["data"], options=_opts(setup, seed=1), detectors=setup["dets"])
    assert list(a.results) == [name]
    assert math.isfinite(a.results[name])
    assert a.results == b.results  # seeded: a rerun gives the identical number
    assert c.results != a.results
    assert a.num_images == {"real": 20, "fake": 40}
    assert a.resize == "legacy" and "standin.pt" in a.detector


def test_fid_of_reals_against_themselves_is_near_zero_and_below_the_generator(setup):
    """A 'generator' that replays the real images gives FID ~ 0 (same features): the reals reach the detector
    the same way the fakes do (uint8, same channels)."""
    from styleforge.data.dataset import ImageDataset

    ds = ImageDataset(setup["data"])
    reals = torch.from_numpy(np.stack([ds[i][0] for i in range(len(ds))])).float() / 127.5 - 1

    class Replay(torch.nn.Module):
        z_dim, c_dim, img_resolution, img_channels = 4, 0, 16, 3

        def __init__(self):
            super().__init__()
            self.i = 0

        def forward(self, z, c, truncation_psi=1.0, noise_mode="const"):
            idx = [(self.i + k) % len(reals) for k in range(z.shape[0])]
            self.i += z.shape[0]
            return reals[idx] + 0.5 / 127.5  # (x * 127.5 + 128) -> exactly the stored uint8 after truncation

    opts = _opts(setup, num_gen=20, use_cache=False)
    fid_self = calc_metric("fid1k", Replay(), ds, options=opts, detectors=setup["dets"]).results["fid1k"]
    fid_g = calc_metric("fid1k", setup["G"], ds, options=opts, detectors=setup["dets"]).results["fid1k"]
    assert abs(fid_self) < 1e-3 * fid_g  # (not 0: 20 samples in 64 dims make sqrtm inexact)
    assert fid_g > 1e-3
    ds.close()


def test_metric_names_and_unknown_name():
    assert METRIC_NAMES[:5] == ("fid50k_full", "kid50k_full", "pr50k3_full", "ppl2_wend", "is50k")
    assert check_metrics([" FID50K_full", "kid5k", "", "kid5k"]) == ["fid50k_full", "kid5k"]
    with pytest.raises(StyleforgeError) as e:
        check_metrics(["fid50k_full", "fid51k"])
    assert e.value.param == "metrics" and "fid51k" in str(e.value) and "kid50k_full" in str(e.value)


def test_append_jsonl_writes_the_official_record(setup, tmp_path):
    r = calc_metric("fid1k", setup["G"], setup["data"], options=_opts(setup), detectors=setup["dets"],
                    snapshot="network-snapshot-000000.pkl")
    p = append_jsonl(r, tmp_path)
    append_jsonl(r, tmp_path)
    assert p == tmp_path / "metric-fid1k.jsonl"
    lines = p.read_text().splitlines()
    assert len(lines) == 2
    rec = json.loads(lines[0])
    assert list(rec)[:7] == ["results", "metric", "total_time", "total_time_str", "num_gpus", "snapshot_pkl",
                             "timestamp"]
    assert rec["results"] == r.results and rec["metric"] == "fid1k" and rec["num_gpus"] == 1
    assert rec["snapshot_pkl"] == "network-snapshot-000000.pkl" and rec["resize"] == "legacy"
