"""The metrics commands (calc_metrics, evaluate) and train's --metrics hook, run in-process on a tiny random
generator, a folder of tiny PNGs and the library's TorchScript stand-in detector saved to a file: their records equal
what the library computes when called directly, reruns give the same numbers, and bad input is one line."""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import sys

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from conftest import assert_one_line_error, tiny_generator
from official_format import tiny_networks, write_official_pickle
from styleforge.commands.calc_metrics import calc_metrics_cmd
from styleforge.commands.evaluate import evaluate_cmd, parse_generators
from styleforge.networks.checkpoint import save_networks

pytestmark = pytest.mark.usefixtures("one_thread")

# Test-only metrics: fid1k, kid1k and pr1k3 with 64 generated images (the commands are under test here, not the numbers; the
# library's tests check those), registered for each test and removed after it.
FID = "fid64"
KID = "kid64"
PR = "pr64"


@pytest.fixture(autouse=True)
def small_metrics(monkeypatch):
    from styleforge.metrics import METRICS, metric_spec

    for name, base in ((FID, "fid1k"), (KID, "kid1k"), (PR, "pr1k3")):
        monkeypatch.setitem(METRICS, name, dataclasses.replace(metric_spec(base), name=name, num_gen=64, max_real=64))


def run(cmd, args):
    return CliRunner().invoke(cmd, [str(a) for a in args])


def ok(r):
    assert r.exit_code == 0, r.output + (repr(r.exception) if r.exception else "")
    return r.output


def json_lines(result):
    """The JSON lines a command printed on stdout."""
    return [json.loads(ln) for ln in result.stdout.splitlines() if ln.startswith("{")]


def png_folder(folder, n, res, seed=0, mode="RGB"):
    rs = np.random.RandomState(seed)
    folder.mkdir(parents=True)
    for i in range(n):
        shape = (res, res, 3) if mode == "RGB" else (res, res)
        Image.fromarray(rs.randint(0, 256, shape, dtype=np.uint8)).save(folder / f"img{i:03d}.png")
    return folder


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A tiny 16 px generator (safetensors) in a run folder whose training_options.json names its data; the data
    (24 random 16 px PNGs); 32 px and grayscale folders; the stand-in detector as a TorchScript file."""
    from styleforge.perceptual import save_detector_standin

    root = tmp_path_factory.mktemp("metrics_cli")
    reals = png_folder(root / "reals", 24, 16)
    run_dir = root / "runs" / "00000-reals"
    run_dir.mkdir(parents=True)
    (run_dir / "training_options.json").write_text(json.dumps({"data": str(reals), "resolution": 16}))
    net = save_networks(run_dir / "network-snapshot-000000.safetensors", {"G_ema": tiny_generator()})
    det = save_detector_standin(root / "standin-inception.pt")
    return {"root": root, "reals": reals, "net": net, "run_dir": run_dir, "det": det,
            "reals32": png_folder(root / "reals32", 8, 32), "gray": png_folder(root / "gray", 8, 16, mode="L")}


def library_value(name, net, data, det, **options):
    """What the library computes when called directly (the reference for the commands' records)."""
    from styleforge import zoo
    from styleforge.metrics import MetricOptions, calc_metric

    G, _ = zoo.load_generator(net, "cpu")
    return calc_metric(name, G, str(data), options=MetricOptions(inception=str(det), vgg16=str(det), **options)).results


# ---------------------------------------------------------------------------------------------------------------------
# calc_metrics

def test_calc_metrics_prints_official_records_equal_to_the_library(files, tmp_path):
    out = tmp_path / "out"
    r = run(calc_metrics_cmd, ["--network", files["net"], "--data", files["reals"], "--metrics", f"{FID},{KID}",
                               "--inception", files["det"], "--outdir", out])
    ok(r)
    recs = json_lines(r)
    assert [r["metric"] for r in recs] == [FID, KID]
    for r in recs:
        assert set(r) >= {"results", "metric", "total_time", "total_time_str", "num_gpus", "snapshot_pkl", "timestamp"}
        assert r["snapshot_pkl"] == "network-snapshot-000000.safetensors" and r["resize"] == "legacy"
        assert r["results"] == pytest.approx(library_value(r["metric"], files["net"], files["reals"], files["det"]),
                                             rel=1e-9, abs=1e-12)
        (saved,) = [json.loads(ln) for ln in (out / f"metric-{r['metric']}.jsonl").read_text().splitlines()]
        assert saved == r
    assert math.isfinite(recs[0]["results"][FID]) and recs[0]["results"][FID] > 0
    # a rerun (the real statistics now come from the cache) gives the same numbers and appends one more line
    again = json_lines(run(calc_metrics_cmd, ["--network", files["net"], "--data", files["reals"], "--metrics", FID,
                                              "--inception", files["det"], "--outdir", out]))
    assert again[0]["results"] == recs[0]["results"]
    assert len((out / f"metric-{FID}.jsonl").read_text().splitlines()) == 2
    # another seed draws other fakes: another number
    other = json_lines(run(calc_metrics_cmd, ["--network", files["net"], "--data", files["reals"], "--metrics", FID,
                                              "--inception", files["det"], "--seed", "1", "--outdir", out]))
    assert other[0]["results"][FID] != recs[0]["results"][FID]


def test_calc_metrics_in_a_run_folder_finds_the_data_and_writes_there(files, tmp_path):
    before = set(p.name for p in files["run_dir"].iterdir())
    r = run(calc_metrics_cmd, ["--network", files["net"], "--metrics", FID, "--inception", files["det"],
                               "--resize", "clean"])
    ok(r)
    (rec,) = json_lines(r)
    assert rec["resize"] == "clean"
    jsonl = files["run_dir"] / f"metric-{FID}.jsonl"
    try:
        assert set(p.name for p in files["run_dir"].iterdir()) - before == {jsonl.name}
        assert json.loads(jsonl.read_text().splitlines()[-1]) == rec
        assert rec["results"] == pytest.approx(
            library_value(FID, files["net"], files["reals"], files["det"], resize="clean"), rel=1e-9)
    finally:
        jsonl.unlink()


def test_calc_metrics_bad_input_is_one_line(files, tmp_path):
    base = ["--network", files["net"], "--data", files["reals"], "--inception", files["det"]]
    # an unknown metric lists the valid names
    line = assert_one_line_error(run(calc_metrics_cmd, base + ["--metrics", "fid50k_fulll"]), "--metrics",
                                 "fid50k_full", "kid50k_full", "ppl2_wend")
    assert "fid50k_fulll" in line
    # a missing detector file: named, with where it goes
    r = run(calc_metrics_cmd, ["--network", files["net"], "--data", files["reals"], "--metrics", FID,
                               "--inception", tmp_path / "nope.pt"])
    assert_one_line_error(r, "nope.pt", "--inception", "inception-2015-12-05.pt")
    # no detector given and none in the cache (no download): where to put it
    r = run(calc_metrics_cmd, ["--network", files["net"], "--data", files["reals"], "--metrics", FID])
    assert_one_line_error(r, "inception-2015-12-05.pt", "--allow-download")
    # a detector file that is not TorchScript
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a model")
    assert_one_line_error(run(calc_metrics_cmd, base[:4] + ["--inception", junk, "--metrics", FID]), "junk.pt",
                          "TorchScript")
    # resolution and channel mismatches between network and data
    r = run(calc_metrics_cmd, ["--network", files["net"], "--data", files["reals32"], "--metrics", FID,
                               "--inception", files["det"]])
    assert_one_line_error(r, "16", "32")
    r = run(calc_metrics_cmd, ["--network", files["net"], "--data", files["gray"], "--metrics", FID,
                               "--inception", files["det"]])
    assert_one_line_error(r, "gray")
    assert_one_line_error(run(calc_metrics_cmd, base + ["--metrics", FID, "--trunc", "nan"]), "--trunc nan", "finite")
    # a network outside a run folder, without --data
    lone = save_networks(tmp_path / "lone.safetensors", {"G_ema": tiny_generator()})
    assert_one_line_error(run(calc_metrics_cmd, ["--network", lone, "--metrics", FID, "--inception", files["det"]]),
                          "--data", "lone.safetensors")
    # missing data and network files
    assert_one_line_error(run(calc_metrics_cmd, ["--network", files["net"], "--data", tmp_path / "none.zip",
                                                 "--metrics", FID, "--inception", files["det"]]), "none.zip")
    assert_one_line_error(run(calc_metrics_cmd, ["--network", tmp_path / "none.pkl", "--data", files["reals"],
                                                 "--metrics", FID, "--inception", files["det"]]), "none.pkl")


def test_calc_metrics_names_a_data_set_too_small_for_the_metric(files, tmp_path):
    """KID's subsets need at least 2 images of each side: 1 real image is refused by name."""
    tiny = png_folder(tmp_path / "one", 1, 16)
    r = run(calc_metrics_cmd, ["--network", files["net"], "--data", tiny, "--metrics", KID, "--inception",
                               files["det"]])
    assert_one_line_error(r, "KID", "at least 2 real images", "has 1")


# ---------------------------------------------------------------------------------------------------------------------
# evaluate

@pytest.fixture(scope="module")
def second_net(files):
    """Another family of file: an official-format pickle of a different tiny 16 px generator."""
    g = {"img_resolution": 16, "synthesis": {"channel_base": 256, "channel_max": 32}}
    G, D, G_ema = tiny_networks(seed=3, g_overrides=g, d_overrides={"img_resolution": 16})
    path = files["root"] / "other.pkl"
    write_official_pickle(path, G=G, D=D, G_ema=G_ema)
    return path


def test_evaluate_writes_table_json_csv_plot_and_html(files, second_net, tmp_path):
    out = tmp_path / "eval"
    r = run(evaluate_cmd, ["--generators", f"mine={files['net']}", f"other={second_net}",
                           "--data", files["reals"], "--metrics", f"{FID},{KID}", "--inception", files["det"],
                           "--outdir", out])
    ok(r)
    res = json.loads((out / "results.json").read_text())
    assert [g["name"] for g in res["generators"]] == ["mine", "other"]
    assert res["columns"] == [FID, KID]
    for g, net in zip(res["generators"], (files["net"], second_net)):
        for m in (FID, KID):
            assert g["results"][m] == pytest.approx(library_value(m, net, files["reals"], files["det"])[m], rel=1e-9)
        assert [r["metric"] for r in g["records"]] == [FID, KID]
    a, b = (g["results"][FID] for g in res["generators"])
    assert a != b  # two different generators
    rows = list(csv.reader((out / "results.csv").read_text().splitlines()))
    assert rows[0] == ["generator", "network", FID, KID]
    assert [r[0] for r in rows[1:]] == ["mine", "other"]
    assert float(rows[1][2]) == res["generators"][0]["results"][FID]  # every digit
    plot = Image.open(out / "results.png")
    assert plot.format == "PNG" and plot.size[0] > 100
    page = (out / "index.html").read_text()
    assert "results.png" in page and "<td>mine</td>" in page and f"{a:.4g}" in page
    # the printed table: a header and one row per generator, values to 4 digits
    table = [ln.split() for ln in r.stdout.splitlines() if ln.startswith(("generator", "mine", "other"))]
    assert table[0] == ["generator", FID, KID] and table[1][:2] == ["mine", f"{a:.4g}"]
    # the repeated-flag form gives the same numbers (same seed, cached real statistics)
    out2 = tmp_path / "eval2"
    ok(run(evaluate_cmd, ["--generators", f"other={second_net}", "--generators", f"mine={files['net']}",
                          "--data", files["reals"], "--metrics", FID, "--inception", files["det"], "--outdir", out2]))
    res2 = json.loads((out2 / "results.json").read_text())
    assert {g["name"]: g["results"][FID] for g in res2["generators"]} == {"mine": a, "other": b}


def test_evaluate_plot_without_matplotlib(files, tmp_path, monkeypatch):
    """Without matplotlib (not a dependency) the bar plot is drawn with PIL."""
    from styleforge.commands.evaluate import Evaluation, plot_png

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    ev = Evaluation(data="d", metrics=[FID], settings={}, generators=[
        {"name": "a", "network": "a.pkl", "results": {FID: 10.0}}, {"name": "b", "network": "b.pkl",
                                                                     "results": {FID: 5.0}}])
    img = np.asarray(Image.open(plot_png(ev, tmp_path / "p.png")).convert("RGB"))
    # two bars in different colours, the first twice as tall as the second
    heights = []
    for color in ((31, 119, 180), (255, 127, 14)):
        rows = np.where((img == color).all(axis=2).any(axis=1))[0]
        heights.append(len(rows))
    assert heights[0] == pytest.approx(2 * heights[1], abs=2)


def test_evaluate_bad_input_is_one_line(files, tmp_path):
    big = save_networks(tmp_path / "big.safetensors", {"G_ema": tiny_generator(res=32)})  # 32 px, the data 16 px
    base = ["--data", files["reals"], "--metrics", FID, "--inception", files["det"], "--outdir", tmp_path / "o"]
    cases = [
        (["--generators", f"a={files['net']}", f"a={files['net']}"], ["--generators", "'a'", "twice"]),
        (["--generators", str(files["net"])], ["--generators", "NAME=NETWORK"]),
        (["--generators", f"={files['net']}"], ["--generators", "NAME=NETWORK"]),
        (["--generators", "a="], ["--generators", "NAME=NETWORK"]),
        (["--generators", "a b=x"], ["--generators", "name 'a b'"]),
        (["--generators", f"a={files['net']}", f"b={tmp_path / 'missing.safetensors'}"], ["missing.safetensors"]),
        (["--generators", f"a={files['net']}", f"big={big}"], ["--generators", "big", "32x32", "16x16"]),
    ]
    for args, needles in cases:
        assert_one_line_error(run(evaluate_cmd, args + base), *needles)
    assert_one_line_error(run(evaluate_cmd, ["--generators", f"a={files['net']}", "--data", tmp_path / "nodata",
                                             "--metrics", FID, "--outdir", tmp_path / "o"]), "nodata", "--data")
    assert not (tmp_path / "o").exists()  # nothing written
    # click's own usage errors are one line too (exit 2)
    assert_one_line_error(run(evaluate_cmd, base), "--generators", exit_code=2)


def test_scripts_and_styleforge_subcommands(tmp_path):
    """scripts/calc_metrics.py and scripts/evaluate.py run as real processes; the styleforge group has both."""
    import subprocess

    from conftest import ROOT
    from styleforge.cli import main

    assert main.commands["calc-metrics"] is calc_metrics_cmd and main.commands["evaluate"] is evaluate_cmd
    for script, needle in (("calc_metrics.py", "--inception"), ("evaluate.py", "NAME=NETWORK")):
        r = subprocess.run([sys.executable, str(ROOT / "scripts" / script), "--help"], capture_output=True, text=True,
                           timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
        assert r.returncode == 0 and needle in r.stdout, r.stderr


def test_parse_generators_keeps_equals_signs_in_the_spec():
    assert parse_generators(["a=https://x.org/g.pkl?v=2", " b = faces32 "]) == [
        ("a", "https://x.org/g.pkl?v=2"), ("b", "faces32")]


# ---------------------------------------------------------------------------------------------------------------------
# train --metrics

def test_training_hook_appends_one_record_per_snapshot(files, tmp_path):
    """A tiny run with two snapshots: metric-<name>.jsonl gets one official record for each, and the last equals
    calc_metrics on the last snapshot file (same default seed)."""
    from train_data import train_tiny

    reals = png_folder(tmp_path / "train", 16, 16)
    res = train_tiny(outdir=str(tmp_path / "runs"), data=str(reals), kimg=0.016, snap=1, metrics=[FID],
                     inception=str(files["det"]), device="cpu")
    recs = [json.loads(ln) for ln in (res.run_dir / f"metric-{FID}.jsonl").read_text().splitlines()]
    snaps = sorted(res.run_dir.glob("network-snapshot-*.safetensors"))
    assert len(recs) == 2 and all(r["metric"] == FID for r in recs)  # tick 0 and the last tick
    assert recs[-1]["snapshot_pkl"] == snaps[-1].name
    assert recs[0]["results"][FID] != recs[1]["results"][FID]  # the network changed in between
    assert recs[-1]["results"] == pytest.approx(library_value(FID, snaps[-1], reals, files["det"]), rel=1e-6)
    assert f"{FID} of {snaps[-1].name}" in (res.run_dir / "log.txt").read_text()
    # measuring leaves the training's random streams alone: the same run without --metrics ends bit for bit equal
    from styleforge.networks.checkpoint import load_networks

    plain = train_tiny(outdir=str(tmp_path / "plain"), data=str(reals), kimg=0.016, snap=1, device="cpu")
    a = load_networks(snaps[-1]).networks
    b = load_networks(sorted(plain.run_dir.glob("network-snapshot-*.safetensors"))[-1]).networks
    for net in ("G", "D", "G_ema"):
        sa, sb = a[net].state_dict(), b[net].state_dict()
        assert all(torch.equal(sa[k], sb[k]) for k in sa), net


def test_training_goes_on_when_a_metric_fails(files, tmp_path):
    """A metric that cannot be computed at a snapshot (here precision/recall, k = 3, on a 3-image data set) is a
    warning in the log; the other metrics are still recorded and the run finishes."""
    from train_data import train_tiny

    reals = png_folder(tmp_path / "three", 3, 16)
    res = train_tiny(outdir=str(tmp_path / "runs"), data=str(reals), kimg=0.008, metrics=[PR, FID],
                     inception=str(files["det"]), vgg16=str(files["det"]), device="cpu")
    log = (res.run_dir / "log.txt").read_text()
    assert f"{PR} of network-snapshot-000000.safetensors failed" in log and "training goes on" in log
    assert not (res.run_dir / f"metric-{PR}.jsonl").exists()
    assert len((res.run_dir / f"metric-{FID}.jsonl").read_text().splitlines()) == 1
    assert res.done and res.snapshot is not None


def test_training_with_a_missing_detector_stops_before_any_work(tmp_path):
    from styleforge.errors import StyleforgeError
    from train_data import train_tiny

    reals = png_folder(tmp_path / "train", 16, 16)
    with pytest.raises(StyleforgeError, match="inception-2015-12-05.pt"):
        train_tiny(outdir=str(tmp_path / "runs"), data=str(reals), kimg=0.016, metrics=[FID], device="cpu")
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())
