"""Every batch command shards its work the same way (``--shard i/n``, or the task of a SLURM array): n shards write
exactly the files one run writes, byte for byte, and a rerun skips what is finished."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from conftest import tiny_discriminator, tiny_generator

pytestmark = pytest.mark.usefixtures("one_thread")


def digests(folder: Path, skip=()) -> dict:
    """relative path -> sha256 of every file below ``folder`` (except names in ``skip``)."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name not in skip}


def run(cmd, args):
    r = CliRunner().invoke(cmd, [str(a) for a in args])
    assert r.exit_code == 0, r.output + (repr(r.exception) if r.exception else "")
    return r.output


@pytest.fixture(scope="module")
def net(tmp_path_factory):
    from styleforge.networks.checkpoint import save_networks

    root = tmp_path_factory.mktemp("shards")
    return save_networks(root / "gd.safetensors", {"G_ema": tiny_generator(), "D": tiny_discriminator()})


def test_generate_one_shard_or_three(tmp_path, net):
    from styleforge.commands.generate import generate_cmd

    args = ["--network", net, "--seeds", "0-6,20", "--device", "cpu", "--batch-size", "3"]
    run(generate_cmd, args + ["--outdir", tmp_path / "one"])
    for i in range(3):
        run(generate_cmd, args + ["--outdir", tmp_path / "three", "--shard", f"{i}/3"])
    one, three = digests(tmp_path / "one"), digests(tmp_path / "three")
    pngs = sorted(k for k in one if k.endswith(".png"))
    assert len(pngs) == 8 and {k: one[k] for k in pngs} == {k: three[k] for k in three if k.endswith(".png")}
    with np.load(tmp_path / "one" / "ws.npz") as whole:
        parts = [np.load(tmp_path / "three" / f"ws-shard{i}of3.npz") for i in range(3)]
        assert np.array_equal(whole["w"], np.concatenate([p["w"] for p in parts]))
        assert whole["seeds"].tolist() == sum((p["seeds"].tolist() for p in parts), [])


def test_align_one_shard_or_three(tmp_path):
    pytest.importorskip("dlib", reason="align needs the align extra (dlib-bin)")
    skdata = pytest.importorskip("skimage.data", reason="scikit-image (dev extra) provides the photos")
    from styleforge.align.batch import align_images
    from styleforge.align.landmarks import get_detector

    src = tmp_path / "photos"
    src.mkdir()
    a = skdata.astronaut()
    Image.fromarray(a).save(src / "a.png")
    Image.fromarray(np.ascontiguousarray(a[:, ::-1])).save(src / "b.png")
    Image.fromarray(a).rotate(12, resample=Image.BICUBIC).save(src / "c.jpg", quality=95)
    det = get_detector("dlib")
    res = align_images(src, tmp_path / "one", size=64, detector=det)
    assert res.counts["aligned"] == 3
    for i in range(3):
        r = align_images(src, tmp_path / "three", size=64, shard=(i, 3), detector=det)
        assert r.images == 1
    one = digests(tmp_path / "one")
    assert len(one) == 6 and one == digests(tmp_path / "three")  # <name>.png + <name>.json each


def test_project_one_shard_or_three(tmp_path, net):
    from styleforge.project.batch import project_files
    from styleforge.utils.runtime import parse_shard

    G = tiny_generator()
    import torch

    with torch.no_grad():
        z = torch.from_numpy(np.random.RandomState(7).randn(3, G.z_dim)).float()
        imgs = (G(z, None).clamp(-1, 1) * 127.5 + 128).clamp(0, 255).byte().permute(0, 2, 3, 1).numpy()
    src = tmp_path / "targets"
    src.mkdir()
    for k, im in enumerate(imgs):
        Image.fromarray(im).save(src / f"t{k}.png")
    common = dict(network=net, num_steps=4, space="w+", loss="pixel", save_video=False, device="cpu")
    project_files(src, tmp_path / "one", **common)
    for i in range(3):
        res = project_files(src, tmp_path / "three", shard=parse_shard(f"{i}/3"), **common)
        assert len(res.done) == 1
    one, three = digests(tmp_path / "one", skip=("projection.json",)), digests(tmp_path / "three",
                                                                               skip=("projection.json",))
    assert len(one) == 3 * 4 and one == three  # target.png, proj.png, projected_w.npz, projected_noise.npz

    def record(p):  # projection.json without its timings (seconds differ from run to run)
        d = json.loads(p.read_text())
        return {k: v for k, v in d.items() if k != "timings"}

    for k in range(3):
        assert record(tmp_path / "one" / f"t{k}" / "projection.json") == \
            record(tmp_path / "three" / f"t{k}" / "projection.json")


def test_edit_one_shard_or_three_and_skip_existing(tmp_path, net):
    from styleforge.commands.edit import edit_cmd

    d = np.random.RandomState(3).randn(32).astype(np.float32)
    np.save(tmp_path / "d.npy", d)
    args = ["--network", net, "--seeds", "0-4", "--direction", tmp_path / "d.npy", "--strengths", "-1,0,1",
            "--device", "cpu"]
    run(edit_cmd, args + ["--outdir", tmp_path / "one"])
    for i in range(3):
        run(edit_cmd, args + ["--outdir", tmp_path / "three", "--shard", f"{i}/3"])
    one = digests(tmp_path / "one", skip=("edit.json",))
    three = digests(tmp_path / "three", skip=tuple(f"edit-shard{i}of3.json" for i in range(3)))
    assert len(one) == 5 * 5 and one == three  # strip, gif and 3 latents per input
    whole = json.loads((tmp_path / "one" / "edit.json").read_text())
    parts = [json.loads((tmp_path / "three" / f"edit-shard{i}of3.json").read_text()) for i in range(3)]
    assert [list(p["inputs"]) for p in parts] == [["edit00", "edit01"], ["edit02", "edit03"], ["edit04"]]
    merged = {k: v for p in parts for k, v in p["inputs"].items()}
    assert merged == whole["inputs"] and all({**p, "inputs": None} == {**whole, "inputs": None} for p in parts)
    # a requeued task (--skip-existing) redoes only what is missing
    (tmp_path / "three" / "edit03.gif").unlink()
    before = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "three").iterdir()}
    out = run(edit_cmd, args + ["--outdir", tmp_path / "three", "--skip-existing"])
    assert "wrote 1 edit(s)" in out and "4 already there, skipped" in out
    after = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "three").iterdir()}
    assert sorted(k for k in after if before.get(k) != after[k]) == ["edit.json", "edit03.gif", "edit03.png",
                                                                      "edit03_s+0.npz", "edit03_s+1.npz",
                                                                      "edit03_s-1.npz"]
    assert digests(tmp_path / "three", skip=("edit.json",) + tuple(f"edit-shard{i}of3.json" for i in range(3))) == one


def test_calc_metrics_shards_its_metric_list(tmp_path, net, monkeypatch):
    import dataclasses

    from styleforge.commands.calc_metrics import calc_metrics_cmd
    from styleforge.metrics import METRICS, metric_spec
    from styleforge.perceptual import save_detector_standin

    for name, base in (("fid16", "fid1k"), ("kid16", "kid1k"), ("is16", "is50k")):
        monkeypatch.setitem(METRICS, name, dataclasses.replace(metric_spec(base), name=name, num_gen=16, max_real=16))
    reals = tmp_path / "reals"
    reals.mkdir()
    rs = np.random.RandomState(0)
    for i in range(16):
        Image.fromarray(rs.randint(0, 256, (16, 16, 3), dtype=np.uint8)).save(reals / f"r{i:02d}.png")
    det = save_detector_standin(tmp_path / "inception.pt")
    args = ["--network", net, "--data", reals, "--metrics", "fid16,kid16,is16", "--inception", det,
            "--device", "cpu", "--batch", "8"]

    def records(folder):
        out = {}
        for p in sorted(folder.glob("metric-*.jsonl")):
            (line,) = p.read_text().splitlines()
            rec = json.loads(line)
            out[p.name] = {k: v for k, v in rec.items() if k not in ("total_time", "total_time_str", "timestamp")}
        return out

    run(calc_metrics_cmd, args + ["--outdir", tmp_path / "one"])
    outs = [run(calc_metrics_cmd, args + ["--outdir", tmp_path / "two", "--shard", f"{i}/2"]) for i in range(2)]
    assert [o.count('{"results"') for o in outs] == [2, 1]  # fid16, kid16 | is16
    one = records(tmp_path / "one")
    assert sorted(one) == ["metric-fid16.jsonl", "metric-is16.jsonl", "metric-kid16.jsonl"]
    assert one == records(tmp_path / "two")
