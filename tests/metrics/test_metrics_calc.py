"""calc_metric end to end: a tiny random StyleGAN2, a folder of tiny PNGs and the TorchScript detector stand-in."""

from __future__ import annotations

import json
import math

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


@pytest.mark.parametrize("name", ["pr1k3", "is1k", "ppl2_wend_1k", "fid1k"])
def test_every_kind_end_to_end_with_the_standin_detector(setup, name):
    opts = _opts(setup, num_gen=20 if name != "ppl2_wend_1k" else 8, resize="clean" if name == "fid1k" else "legacy")
    r = calc_metric(name, setup["G"], setup["data"], options=opts, detectors=setup["dets"])
    assert r.results and all(math.isfinite(v) for v in r.results.values()), r.results
    if name == "pr1k3":
        assert set(r.results) == {"pr1k3_precision", "pr1k3_recall"}
        assert all(0 <= v <= 1 for v in r.results.values())
    if name == "is1k":
        assert r.results["is1k_mean"] >= 1 and r.results["is1k_std"] >= 0
    if name == "fid1k":
        assert r.resize == "clean" and r.as_json()["resize"] == "clean"


def test_clean_resize_changes_the_number_and_is_cached_separately(setup):
    events = []
    kw = dict(detectors=setup["dets"], callback=events.append)
    legacy = calc_metric("fid1k", setup["G"], setup["data"], options=_opts(setup, cache_dir=setup["root"] / "c2"), **kw)
    clean = calc_metric("fid1k", setup["G"], setup["data"],
                        options=_opts(setup, cache_dir=setup["root"] / "c2", resize="clean"), **kw)
    assert legacy.results["fid1k"] != clean.results["fid1k"]
    assert len(list((setup["root"] / "c2").glob("*.npz"))) == 2
    assert not [e for e in events if e.kind == "note" and "cache" in str(e.message)]


def test_real_stats_cache_hit_gives_identical_numbers(setup, tmp_path):
    from styleforge.metrics import features as mf

    events = []
    opts = _opts(setup, cache_dir=tmp_path, num_gen=20)
    for name in ("fid1k", "kid1k", "pr1k3"):
        a = calc_metric(name, setup["G"], setup["data"], options=opts, detectors=setup["dets"], callback=events.append)
        n_files = len(list(tmp_path.iterdir()))
        b = calc_metric(name, setup["G"], setup["data"], options=opts, detectors=setup["dets"], callback=events.append)
        assert a.results == b.results
        assert len(list(tmp_path.iterdir())) == n_files
    notes = [str(e.message) for e in events if e.kind == "note"]
    assert len(notes) == 3 and all("from the cache" in n for n in notes)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert len(names) == 3 and not [n for n in names if n.startswith(".")]
    mu, sigma, count = mf.load_meancov(next(tmp_path.glob("*meancov*.npz")))
    assert count == 20 and mu.shape == (64,) and sigma.shape == (64, 64)


def test_cache_key_follows_the_dataset_content(setup, tmp_path):
    data = png_folder(tmp_path / "d", n=20, res=16)
    opts = _opts(setup, cache_dir=tmp_path / "cache")
    a = calc_metric("fid1k", setup["G"], data, options=opts, detectors=setup["dets"])
    png_folder(tmp_path / "d", n=1, res=16, seed=99)  # rewrite the first image only
    events = []
    b = calc_metric("fid1k", setup["G"], data, options=opts, detectors=setup["dets"], callback=events.append)
    assert a.results != b.results
    assert not [e for e in events if e.kind == "note"]
    assert len(list((tmp_path / "cache").iterdir())) == 2


class _Boom(torch.nn.Module):
    """A detector that fails on its third call."""

    def __init__(self, det):
        super().__init__()
        self.det, self.calls = det, 0

    def forward(self, *a, **k):
        self.calls += 1
        if self.calls == 3:
            raise RuntimeError("detector failed")
        return self.det(*a, **k)


@pytest.mark.parametrize("name", ["fid1k", "kid1k"])
def test_a_failing_computation_leaves_no_cache_file(setup, tmp_path, name):
    boom = _Boom(setup["dets"]["inception"])
    with pytest.raises(RuntimeError, match="detector failed"):
        calc_metric(name, setup["G"], setup["data"], options=_opts(setup, cache_dir=tmp_path, batch_size=8),
                    detectors={"inception": boom})
    assert boom.calls == 3
    assert list(tmp_path.iterdir()) == []


def test_zip_dataset_works_and_matches_the_folder(setup, tmp_path):
    import zipfile

    z = tmp_path / "data.zip"
    with zipfile.ZipFile(z, "w") as zf:
        for p in sorted(setup["data"].iterdir()):
            zf.write(p, p.name)
    opts = _opts(setup, use_cache=False)
    a = calc_metric("kid1k", setup["G"], z, options=_opts(setup, use_cache=False, num_workers=1),
                    detectors=setup["dets"])  # (the zip read by a DataLoader worker)
    b = calc_metric("kid1k", setup["G"], setup["data"], options=opts, detectors=setup["dets"])
    assert a.results == b.results


# -- bad input --------------------------------------------------------------------------------------------------


def test_resolution_and_channel_mismatch(setup, tmp_path):
    small = png_folder(tmp_path / "r8", n=4, res=8)
    gray = png_folder(tmp_path / "gray", n=4, res=16, channels=1)
    with pytest.raises(StyleforgeError, match="8x8 but the network makes 16x16") as e:
        calc_metric("fid1k", setup["G"], small, options=_opts(setup), detectors=setup["dets"])
    assert e.value.param == "data"
    with pytest.raises(StyleforgeError, match="grayscale but the network makes RGB"):
        calc_metric("fid1k", setup["G"], gray, options=_opts(setup), detectors=setup["dets"])


def test_grayscale_network_and_data_work(setup, tmp_path):
    """Grayscale on both sides: repeated to 3 channels before the detector, as official."""
    from conftest import tiny_generator as tg

    gray = png_folder(tmp_path / "gray", n=6, res=16, channels=1)
    G = tg(res=16)
    G1 = type(G)(G.config.__class__.from_dict({**G.config.to_dict(), "img_channels": 1})).eval()
    r = calc_metric("fid1k", G1, gray, options=_opts(setup, num_gen=6, use_cache=False), detectors=setup["dets"])
    assert math.isfinite(r.results["fid1k"])


def test_too_few_images(setup, tmp_path):
    one = png_folder(tmp_path / "one", n=1, res=16)
    three = png_folder(tmp_path / "three", n=3, res=16)
    opts = _opts(setup, use_cache=False)
    with pytest.raises(StyleforgeError, match="at least 2 real"):
        calc_metric("kid1k_full", setup["G"], one, options=opts, detectors=setup["dets"])
    with pytest.raises(StyleforgeError, match="at least 2 real"):
        calc_metric("fid1k_full", setup["G"], one, options=opts, detectors=setup["dets"])
    with pytest.raises(StyleforgeError, match="at least 4 real"):
        calc_metric("pr1k3_full", setup["G"], three, options=opts, detectors=setup["dets"])
    with pytest.raises(StyleforgeError, match="at least 10"):
        calc_metric("is1k", setup["G"], three, options=_opts(setup, num_gen=5), detectors=setup["dets"])


def test_detector_file_errors(setup, tmp_path):
    bad = tmp_path / "inception-2015-12-05.pt"
    bad.write_bytes(b"not a torchscript file")
    with pytest.raises(StyleforgeError, match="not a TorchScript file") as e:
        load_detector("inception", bad)
    assert "inception-2015-12-05.pt" in str(e.value)
    with pytest.raises(StyleforgeError, match="no such file") as e:
        load_detector("vgg16", tmp_path / "missing.pt")
    assert "vgg16.pt" in str(e.value)
    with pytest.raises(StyleforgeError) as e:  # nothing in the cache, downloads off
        calc_metric("fid1k", setup["G"], setup["data"], options=_opts(setup))
    msg = str(e.value)
    assert "inception-2015-12-05.pt" in msg and "put it at" in msg and "https://" in msg


def test_missing_data_and_options(setup):
    with pytest.raises(StyleforgeError, match="needs a dataset") as e:
        calc_metric("fid1k", setup["G"], None, options=_opts(setup), detectors=setup["dets"])
    assert e.value.param == "data"
    with pytest.raises(StyleforgeError) as e:
        calc_metric("fid1k", setup["G"], setup["data"], options=_opts(setup, resize="bilinear"),
                    detectors=setup["dets"])
    assert e.value.param == "resize"
    with pytest.raises(StyleforgeError) as e:
        calc_metric("fid51k", setup["G"], setup["data"], options=_opts(setup), detectors=setup["dets"])
    assert e.value.param == "metrics"


def test_standin_detector_loads_through_the_cache_name(setup, monkeypatch, tmp_path):
    """load_detector(kind) with no path finds the official name in the cache (here: the stand-in put there)."""
    import shutil

    from styleforge.utils.cache import cache_dir

    cache_dir().mkdir(parents=True, exist_ok=True)
    shutil.copy(setup["det_file"], cache_dir() / "inception-2015-12-05.pt")
    det = load_detector("inception")
    x = torch.randint(0, 256, (2, 3, 16, 16), dtype=torch.uint8)
    assert det(x, return_features=True).shape == (2, 64)
    assert det(x, no_output_bias=True).shape == (2, 16)
    assert det.digest == load_detector("inception", setup["det_file"]).digest


def test_a_generator_in_training_mode_is_sampled_in_eval_mode_and_given_back(setup):
    G = setup["G"]
    w_avg = G.mapping.w_avg.clone()
    G.train()
    try:
        a = calc_metric("fid1k", G, setup["data"], options=_opts(setup, num_gen=20), detectors=setup["dets"])
        assert G.training and torch.equal(G.mapping.w_avg, w_avg)
    finally:
        G.eval()
    b = calc_metric("fid1k", G, setup["data"], options=_opts(setup, num_gen=20), detectors=setup["dets"])
    assert a.results == b.results


def test_standin_call_signature_and_identity(tmp_path):
    from styleforge.perceptual import DetectorStandIn, detector_identity

    det = load_detector("vgg16", save_detector_standin(tmp_path / "a.pt", features=32, logits=10, seed=3))
    x = torch.randint(0, 256, (3, 3, 20, 20), dtype=torch.uint8)
    p = det(x)
    assert p.shape == (3, 10) and torch.allclose(p.sum(dim=1), torch.ones(3))
    assert not torch.allclose(det(x, no_output_bias=True), p)
    assert det(x, return_features=True).shape == (3, 32)
    lp = det(x.float(), resize_images=False, return_lpips=True)
    norms = lp.square().sum(dim=1)  # 4 taps of unit vectors / sqrt(H*W): 4, less where ReLU zeroed a position
    assert lp.shape[0] == 3 and (norms <= 4 + 1e-4).all() and (norms > 3.5).all()
    assert detector_identity(DetectorStandIn(seed=1)) == detector_identity(DetectorStandIn(seed=1))
    assert detector_identity(DetectorStandIn(seed=1)) != detector_identity(DetectorStandIn(seed=2))


def test_conditional_network_draws_real_labels(setup, tmp_path):
    from conftest import tiny_generator as tg

    data = png_folder(tmp_path / "cond", n=12, res=16)
    names = sorted(p.name for p in data.iterdir())
    (data / "dataset.json").write_text(json.dumps({"labels": [[n, i % 3] for i, n in enumerate(names)]}))
    G = tg(res=16, c_dim=3)
    seen = []
    orig = G.mapping.forward

    def spy(z, c, *a, **k):
        seen.append(c.clone())
        return orig(z, c, *a, **k)

    G.mapping.forward = spy
    r = calc_metric("fid1k", G, data, options=_opts(setup, num_gen=24, use_cache=False), detectors=setup["dets"])
    assert math.isfinite(r.results["fid1k"])
    c = torch.cat(seen)
    assert c.shape == (24, 3) and torch.equal(c.sum(dim=1), torch.ones(24))  # one-hot real labels
    assert len(set(c.argmax(dim=1).tolist())) > 1
    plain = png_folder(tmp_path / "plain", n=12, res=16)
    with pytest.raises(StyleforgeError, match="conditional"):
        calc_metric("fid1k", G, plain, options=_opts(setup, num_gen=24, use_cache=False), detectors=setup["dets"])


def test_cache_key_follows_the_detector(setup, tmp_path):
    other = load_detector("inception", save_detector_standin(tmp_path / "other.pt", seed=7))
    opts = _opts(setup, cache_dir=tmp_path / "cache", num_gen=20)
    events = []
    calc_metric("fid1k", setup["G"], setup["data"], options=opts, detectors=setup["dets"], callback=events.append)
    calc_metric("fid1k", setup["G"], setup["data"], options=opts, detectors={"inception": other},
                callback=events.append)
    assert not [e for e in events if e.kind == "note"]
    assert len(list((tmp_path / "cache").iterdir())) == 2
