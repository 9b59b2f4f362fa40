"""generate CLI: outputs, sharding, latents, and one-line errors (no traceback) for bad input."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from conftest import assert_one_line_error, ROOT, tiny_discriminator, tiny_generator
from styleforge.commands.convert import convert_cmd, info_cmd
from styleforge.commands.generate import generate_cmd
from styleforge.errors import StyleforgeError
from styleforge.networks.checkpoint import save_networks


@pytest.fixture()
def net(tmp_path):
    return save_networks(tmp_path / "g.safetensors", {"G_ema": tiny_generator()})


@pytest.fixture()
def cond_net(tmp_path):
    return save_networks(tmp_path / "gc.safetensors", {"G_ema": tiny_generator(c_dim=4)})


def run(args, cmd=generate_cmd):
    return CliRunner().invoke(cmd, [str(a) for a in args])


def one_line_error(r, *needles):
    return assert_one_line_error(r, *needles, exit_code=None, prefixes=("error:", "Error:"))


def test_seeds_grid_latents_manifest(net, tmp_path):
    out = tmp_path / "out"
    r = run(["--network", net, "--seeds", "0-2,7", "--trunc", "0.7", "--grid", "--outdir", out, "--batch-size", "3"])
    assert r.exit_code == 0, r.output
    names = sorted(p.name for p in out.iterdir())
    assert names == ["generate.json", "grid.png", "seed0000.png", "seed0001.png", "seed0002.png", "seed0007.png", "ws.npz"]
    assert not any(n.endswith(".tmp") for n in os.listdir(out))
    with np.load(out / "ws.npz") as d:
        assert d["w"].shape == (4, 6, 32) and list(d["seeds"]) == [0, 1, 2, 7]
    assert Image.open(out / "grid.png").size == (32, 32)
    # images do not depend on the batch size
    out1 = tmp_path / "b1"
    assert run(["--network", net, "--seeds", "7", "--trunc", "0.7", "--outdir", out1]).exit_code == 0
    a = np.asarray(Image.open(out / "seed0007.png")).astype(int)
    b = np.asarray(Image.open(out1 / "seed0007.png")).astype(int)
    assert np.abs(a - b).max() <= 1


def test_projected_w_round_trip(net, tmp_path):
    out = tmp_path / "out"
    assert run(["--network", net, "--seeds", "3-4", "--outdir", out]).exit_code == 0
    proj = tmp_path / "proj"
    r = run(["--network", net, "--projected-w", out / "ws.npz", "--outdir", proj])
    assert r.exit_code == 0, r.output
    for i, s in enumerate([3, 4]):
        assert np.array_equal(np.asarray(Image.open(proj / f"proj{i:02d}.png")), np.asarray(Image.open(out / f"seed{s:04d}.png")))


def test_shards_partition_the_seeds_and_resume(net, tmp_path):
    out = tmp_path / "out"
    for i in range(3):
        assert run(["--network", net, "--seeds", "0-9", "--shard", f"{i}/3", "--outdir", out]).exit_code == 0
    assert sorted(p.name for p in out.glob("seed*.png")) == [f"seed{s:04d}.png" for s in range(10)]
    assert (out / "generate-shard2of3.json").exists()
    (out / "seed0004.png").unlink()
    r = run(["--network", net, "--seeds", "0-9", "--skip-existing", "--outdir", out])
    assert r.exit_code == 0 and "1 image(s)" in r.output and "9 already there" in r.output


def test_shard_from_slurm_environment(net, tmp_path, monkeypatch):
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "1")
    monkeypatch.setenv("SLURM_ARRAY_TASK_COUNT", "2")
    out = tmp_path / "out"
    assert run(["--network", net, "--seeds", "0-3", "--outdir", out]).exit_code == 0
    assert sorted(p.name for p in out.glob("seed*.png")) == ["seed0002.png", "seed0003.png"]


def test_conditional_network_needs_valid_class(cond_net, tmp_path):
    one_line_error(run(["--network", cond_net, "--seeds", "0", "--outdir", tmp_path / "o"]), "conditional", "--class 0..3")
    one_line_error(run(["--network", cond_net, "--seeds", "0", "--class", "9", "--outdir", tmp_path / "o"]), "out of range")
    r = run(["--network", cond_net, "--seeds", "0-1", "--class", "2", "--outdir", tmp_path / "o"])
    assert r.exit_code == 0, r.output


def test_bad_files_give_one_line(tmp_path, net):
    out = tmp_path / "o"
    one_line_error(run(["--network", tmp_path / "missing.pkl", "--seeds", "0", "--outdir", out]), "missing.pkl", "no such")
    empty = tmp_path / "empty.pkl"
    empty.write_bytes(b"")
    one_line_error(run(["--network", empty, "--seeds", "0", "--outdir", out]), "empty.pkl", "empty")
    trunc = tmp_path / "trunc.safetensors"
    trunc.write_bytes(Path(net).read_bytes()[:5000])
    one_line_error(run(["--network", trunc, "--seeds", "0", "--outdir", out]), "trunc.safetensors")
    junk = tmp_path / "junk.pkl"
    junk.write_bytes(os.urandom(4096))
    one_line_error(run(["--network", junk, "--seeds", "0", "--outdir", out]), "junk.pkl")
    notnet = tmp_path / "list.pkl"
    notnet.write_bytes(pickle.dumps([1, 2, 3], protocol=4))
    one_line_error(run(["--network", notnet, "--seeds", "0", "--outdir", out]), "list.pkl", "not a network")
    evil = tmp_path / "evil.pkl"
    evil.write_bytes(b"\x80\x04\x95\x1b\x00\x00\x00\x00\x00\x00\x00\x8c\x05posix\x94\x8c\x06system\x94\x93\x94\x8c\x04true\x94\x85\x94R\x94.")
    one_line_error(run(["--network", evil, "--seeds", "0", "--outdir", out]), "evil.pkl", "posix.system")
    assert not out.exists() or not any(out.glob("*.png"))


def test_bad_flags_give_one_line(net, tmp_path):
    r = run(["--network", net, "--seeds", "3-1", "--outdir", tmp_path / "o"])
    assert r.exit_code == 2 and "backwards" in r.output and "Traceback" not in r.output
    r = run(["--network", net, "--seeds", "a,b", "--outdir", tmp_path / "o"])
    assert r.exit_code == 2 and "cannot parse" in r.output
    one_line_error(run(["--network", net, "--seeds", "0", "--shard", "3/2", "--outdir", tmp_path / "o"]), "--shard")
    one_line_error(run(["--network", net, "--outdir", tmp_path / "o"]), "--seeds")
    bad_w = tmp_path / "w.npz"
    np.savez(bad_w, w=np.zeros((2, 5, 7), np.float32))
    one_line_error(run(["--network", net, "--projected-w", bad_w, "--outdir", tmp_path / "o"]), "w.npz", "[N, 6, 32]")
    one_line_error(run(["--network", net, "--seeds", "0", "--device", "cuda", "--outdir", tmp_path / "o"]), "cuda")


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write into read-only folders")
def test_unwritable_outdir(net, tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    one_line_error(run(["--network", net, "--seeds", "0", "--outdir", ro / "x"]), "ro")


def test_unwritable_outdir_is_a_file(net, tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    one_line_error(run(["--network", net, "--seeds", "0", "--outdir", f / "sub"]), "file")


def test_convert_and_info(net, tmp_path):
    dst = tmp_path / "copy.safetensors"
    r = run([net, dst], cmd=convert_cmd)
    assert r.exit_code == 0 and dst.exists()
    r = run([dst], cmd=info_cmd)
    assert r.exit_code == 0 and '"stylegan2.generator"' in r.output and '"num_ws": 6' in r.output
    one_line_error(run([tmp_path / "nope.pkl", dst], cmd=convert_cmd), "nope.pkl")


def test_convert_only_some_networks(tmp_path):
    from styleforge.networks.checkpoint import load_networks

    src = save_networks(tmp_path / "snap.safetensors", {"G": tiny_generator(seed=1), "D": tiny_discriminator(),
                                                       "G_ema": tiny_generator(seed=2)})
    dst = tmp_path / "g.safetensors"
    r = run([src, dst, "--only", "G_ema"], cmd=convert_cmd)
    assert r.exit_code == 0, r.output
    out, ref = load_networks(dst), load_networks(src)
    assert list(out.networks) == ["G_ema"]
    for (n, a), (_, b) in zip(out.networks["G_ema"].state_dict().items(), ref.networks["G_ema"].state_dict().items()):
        assert torch.equal(a, b), n
    one_line_error(run([src, tmp_path / "x.safetensors", "--only", "G_ema,E"], cmd=convert_cmd), "snap.safetensors",
                   "not E")
    assert not (tmp_path / "x.safetensors").exists()


def test_default_network_is_used_without_network_flag(tmp_path):
    r = run(["--seeds", "0-3", "--grid", "--outdir", tmp_path / "o"])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "o" / "grid.png").exists()


def test_named_network_offline_says_where_to_put_it(tmp_path):
    one_line_error(run(["--network", "ffhq", "--seeds", "0", "--outdir", tmp_path / "o"]),
                   "ffhq.pkl", "--allow-download", "https://")


def test_script_runs_as_a_real_process(net, tmp_path):
    out = tmp_path / "o"
    p = subprocess.run([sys.executable, str(ROOT / "scripts" / "generate.py"), "--network", str(net), "--seeds", "0-1",
                        "--outdir", str(out)], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    assert "wrote 2 image(s)" in p.stdout
    bad = subprocess.run([sys.executable, str(ROOT / "scripts" / "generate.py"), "--network", str(tmp_path / "x.pkl"),
                          "--seeds", "0", "--outdir", str(out)], capture_output=True, text=True, timeout=300)
    assert bad.returncode == 1 and bad.stderr.strip().startswith("error:") and "Traceback" not in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1


def test_bundled_model_names_resolve(tmp_path, monkeypatch):
    import styleforge.utils.cache as cache

    models = tmp_path / "models"
    models.mkdir()
    save_networks(models / "mini.safetensors", {"G_ema": tiny_generator()})
    monkeypatch.setattr(cache, "BUNDLED_MODELS_DIR", models)
    r = run(["--network", "mini", "--seeds", "0", "--outdir", tmp_path / "o"])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "o" / "seed0000.png").exists()
    one_line_error(run(["--network", "maxi", "--seeds", "0", "--outdir", tmp_path / "o"]), "maxi", "mini", "ffhq")


def test_outputs_get_normal_file_permissions(net, tmp_path):
    """Atomic writes go through a private temp file; the result must still be readable like open()'s files."""
    old = os.umask(0o022)
    try:
        import styleforge.utils.fileio as fileio

        fileio._FILE_MODE = None
        r = run(["--network", net, "--seeds", "0", "--outdir", tmp_path / "o"])
        assert r.exit_code == 0, r.output
        for name in ("seed0000.png", "ws.npz", "generate.json"):
            assert (tmp_path / "o" / name).stat().st_mode & 0o777 == 0o644, name
    finally:
        os.umask(old)
        fileio._FILE_MODE = None


def test_latents_do_not_depend_on_the_batch_size(net, tmp_path):
    """Every seed is mapped on its own (as the official script maps it), whatever --batch-size is."""
    ws = {}
    for bs in ("1", "3", None):
        out = tmp_path / f"b{bs}"
        args = ["--network", net, "--seeds", "0-6", "--trunc", "0.7", "--outdir", out]
        args += ["--batch-size", bs] if bs else []
        assert run(args).exit_code == 0
        with np.load(out / "ws.npz") as d:
            ws[bs] = d["w"]
    assert np.array_equal(ws["1"], ws["3"]) and np.array_equal(ws["1"], ws[None])


@pytest.mark.parametrize("threaded", [True, False])
def test_a_failed_write_stops_the_run_with_one_line(net, tmp_path, monkeypatch, threaded):
    """PNGs are written by a background thread on GPUs (forced here on the CPU), inline on the CPU; a failed
    write reaches the user as the usual one-line error either way."""
    import styleforge.generate as gen
    from styleforge.errors import StyleforgeError

    writer = gen.BackgroundWriter
    monkeypatch.setattr(gen, "BackgroundWriter", lambda enabled: writer(enabled=threaded))
    real = gen.save_image
    written = []

    def flaky(img, path):
        if len(written) == 2:
            raise StyleforgeError(f"{path}: cannot write image (disk full); check free disk space")
        written.append(path)
        return real(img, path)

    monkeypatch.setattr(gen, "save_image", flaky)
    out = tmp_path / "out"
    r = run(["--network", net, "--seeds", "0-20", "--batch-size", "2", "--outdir", out])
    one_line_error(r, "disk full", "seed0002.png")
    assert not (out / "generate.json").exists()  # the run stopped
    assert not any(n.endswith(".tmp") for n in os.listdir(out))


def test_out_of_memory_is_one_line_and_other_errors_are_not_hidden(net, tmp_path, monkeypatch):
    import styleforge.generate as gen

    def oom(**kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(gen, "generate_images", oom)
    r = run(["--network", net, "--seeds", "0-3", "--outdir", tmp_path / "o"])
    one_line_error(r, "out of memory", "--batch-size")

    def bug(**kwargs):
        raise RuntimeError("shape mismatch in a layer")

    monkeypatch.setattr(gen, "generate_images", bug)
    r = run(["--network", net, "--seeds", "0-3", "--outdir", tmp_path / "o"])
    assert isinstance(r.exception, RuntimeError)  # a real bug is not dressed up as a user error


def test_background_writer_cancels_queued_writes_after_a_failure():
    import time

    from styleforge.generate import BackgroundWriter

    done = []

    def fail():
        raise OSError("disk full")

    def slow(i):
        time.sleep(0.05)
        done.append(i)

    with pytest.raises(OSError, match="disk full"):
        with BackgroundWriter(enabled=True) as w:
            w.submit(fail)
            for i in range(6):
                w.submit(slow, i)
    assert len(done) < 6  # the writes still queued were cancelled, not run one after another


# ----------------------------------------------------------------------------------------------------------
# Huge seed lists stream (SeedList itself: test_runtime.py); nonsense values, SLURM shards, usage errors, warnings,
# leftovers


def test_huge_seed_range_streams_with_bounded_memory(net, tmp_path, monkeypatch):
    """--seeds 0-100000000: the progress bar shows the total at once, images come at once, and memory does
    not depend on the count (stopped after three batches)."""
    import tracemalloc

    import styleforge.generate as gen

    real, calls = gen.save_image, []

    def stop_after_three_batches(img, path):
        calls.append(path)
        if len(calls) > 6:
            raise KeyboardInterrupt
        return real(img, path)

    monkeypatch.setattr(gen, "save_image", stop_after_three_batches)
    out = tmp_path / "out"
    assert run(["--network", net, "--seeds", "0-1", "--outdir", tmp_path / "warm"]).exit_code == 0
    calls.clear()
    tracemalloc.start()
    try:
        r = run(["--network", net, "--seeds", "0-100000000", "--batch-size", "2", "--outdir", out])
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert r.exit_code == 130 and "interrupted" in r.output, r.output
    assert "0/100000001" in r.output  # the bar's total, shown before the first image
    assert peak < 20e6, peak  # Python-side allocations (numpy included): a list of the seeds alone is GBs
    assert sorted(os.listdir(out)) == [f"seed{s:04d}.png" for s in range(6)]  # no half-written ws.npz


def test_streamed_latents_and_compact_manifest(net, tmp_path):
    """ws.npz is streamed batch by batch and still covers the whole shard (skipped images too); generate.json
    names the seeds as ranges and the file-name pattern, not one entry per image."""
    out = tmp_path / "out"
    assert run(["--network", net, "--seeds", "0-4,9", "--batch-size", "2", "--outdir", out]).exit_code == 0
    with np.load(out / "ws.npz") as d:
        w0 = d["w"]
        assert w0.shape == (6, 6, 32) and list(d["seeds"]) == [0, 1, 2, 3, 4, 9]
    (out / "seed0003.png").unlink()
    r = run(["--network", net, "--seeds", "0-4,9", "--batch-size", "2", "--skip-existing", "--outdir", out])
    assert r.exit_code == 0 and "1 image(s)" in r.output and "5 already there" in r.output, r.output
    with np.load(out / "ws.npz") as d:
        assert np.array_equal(d["w"], w0) and list(d["seeds"]) == [0, 1, 2, 3, 4, 9]
    m = json.loads((out / "generate.json").read_text())
    assert m["seeds"] == "0-4,9" and m["count"] == 6 and m["image_pattern"].format(9) == "seed0009.png"
    assert "images" not in m
    r = run(["--network", net, "--projected-w", out / "ws.npz", "--seeds", "1", "--shard", "1/2", "--outdir", tmp_path / "p"])
    assert r.exit_code == 0, r.output
    m = json.loads((tmp_path / "p" / "generate-shard1of2.json").read_text())
    assert m["index"] == "3-5" and m["seeds"] is None and sorted(p.name for p in (tmp_path / "p").glob("*.png")) == [
        "proj03.png", "proj04.png", "proj05.png"]


def test_grid_too_large_is_refused_before_any_work(net, tmp_path, monkeypatch):
    import styleforge.generate as gen

    monkeypatch.setattr(gen, "GRID_MAX_BYTES", 16 * 16 * 3 * 10)
    out = tmp_path / "out"
    one_line_error(run(["--network", net, "--seeds", "0-10", "--grid", "--outdir", out]), "--grid", "11 images")
    assert not out.exists()
    assert run(["--network", net, "--seeds", "0-9", "--grid", "--outdir", out]).exit_code == 0


def test_nan_and_inf_are_errors_not_black_images(net, tmp_path):
    out = tmp_path / "out"
    for v in ("nan", "inf", "-inf"):
        one_line_error(run(["--network", net, "--seeds", "0", "--trunc", v, "--outdir", out]), f"--trunc {v}", "finite")
    w = np.random.RandomState(0).randn(4, 6, 32).astype(np.float32)
    w[1, 2, 3] = np.nan
    w[3, 0, 0] = np.inf
    np.savez(tmp_path / "bad.npz", w=w)
    one_line_error(run(["--network", net, "--projected-w", tmp_path / "bad.npz", "--outdir", out]), "bad.npz", "row(s) 1, 3")
    assert not out.exists()


def test_slurm_shard_out_of_range_is_an_error_like_shard(net, tmp_path, monkeypatch):
    from styleforge.utils.runtime import parse_shard

    out = tmp_path / "out"
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "5")
    monkeypatch.setenv("SLURM_ARRAY_TASK_COUNT", "2")
    one_line_error(run(["--network", net, "--seeds", "0-3", "--outdir", out]),
                   "out of range", "SLURM_ARRAY_TASK_ID=5", "SLURM_ARRAY_TASK_COUNT=2", "--shard")
    assert not out.exists()
    assert parse_shard("1/2") == (1, 2)  # an explicit --shard wins
    monkeypatch.setenv("SLURM_ARRAY_TASK_MIN", "4")  # --array=4-5
    assert parse_shard(None) == (1, 2)
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "8")  # --array=0-12:4 (tasks 0, 4, 8, 12)
    monkeypatch.setenv("SLURM_ARRAY_TASK_MIN", "0")
    monkeypatch.setenv("SLURM_ARRAY_TASK_STEP", "4")
    monkeypatch.setenv("SLURM_ARRAY_TASK_COUNT", "4")
    assert parse_shard(None) == (2, 4)
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "x")
    with pytest.raises(StyleforgeError, match="SLURM_ARRAY_TASK_ID=x"):
        parse_shard(None)


@pytest.mark.parametrize("cmd, args", [
    ("generate", ["--seeds", "a,b"]),
    ("generate", ["--seeds", "3-1"]),
    ("generate", ["--seeds", "0", "--outdir", "{file}"]),
    ("generate", ["--seeds", "0"]),  # --outdir missing
    ("project", ["--target", "{file}", "--num-steps", "0"]),
    ("project", ["--target", "{file}", "--outdir", "{file}"]),
    ("interpolate", ["--from-seed", "1", "--to-seed", "2", "--outdir", "{file}"]),
    ("interpolate", ["--from-seed", "1", "--to-seed", "2", "--steps", "1"]),
])
def test_bad_flag_values_are_one_line_in_every_command(tmp_path, cmd, args):
    from styleforge.commands.interpolate import interpolate_cmd
    from styleforge.commands.project import project_cmd

    f = tmp_path / "file"
    f.write_text("x")
    args = [a.format(file=f) for a in args]
    if "--outdir" not in args and args != ["--seeds", "0"]:
        args += ["--outdir", tmp_path / "o"]
    r = run(args, {"generate": generate_cmd, "project": project_cmd, "interpolate": interpolate_cmd}[cmd])
    line = assert_one_line_error(r, exit_code=2)
    assert "Usage:" not in r.output and "--help" not in r.output and len(r.output.strip().splitlines()) == 1, r.output
    assert any(flag in line for flag in ("--seeds", "--outdir", "--num-steps", "--steps")), line


def test_warnings_are_one_clean_line(net, tmp_path):
    import warnings

    before = warnings.showwarning
    r = run(["--network", net, "--seeds", "0", "--class", "2", "--outdir", tmp_path / "o"])
    assert r.exit_code == 0, r.output
    lines = [ln for ln in r.output.splitlines() if "ignored" in ln]
    assert lines == ["warning: --class is ignored: the network is unconditional"], r.output
    assert ".py:" not in r.output and "warnings.warn" not in r.output
    assert warnings.showwarning is before  # the CLI's format ends with the command


def test_failed_run_leaves_no_empty_outdir(net, tmp_path, monkeypatch):
    import styleforge.generate as gen

    junk = tmp_path / "junk.pkl"
    junk.write_bytes(os.urandom(4096))
    out = tmp_path / "new" / "out"
    one_line_error(run(["--network", junk, "--seeds", "0", "--outdir", out]), "junk.pkl")
    assert not (tmp_path / "new").exists()

    def oom(img):
        raise MemoryError()

    monkeypatch.setattr(gen, "uint8_as_generate", oom)  # fails in the first batch, on the device
    one_line_error(run(["--network", net, "--seeds", "0-3", "--outdir", out]), "out of memory")
    assert not (tmp_path / "new").exists()


def test_library_reports_progress_through_the_callback(net, tmp_path, capsys):
    from styleforge.generate import generate_images

    events = []
    res = generate_images(tmp_path / "o", network=net, seeds=[0, 1, 2], batch_size=2, callback=events.append)
    assert len(res.files) == 3
    assert [(e.kind, e.n) for e in events] == [("begin", 0), ("advance", 2), ("advance", 1), ("end", 0)]
    assert events[0].stage == "generate" and events[0].total == 3 and events[0].unit == "img"
    events.clear()
    (tmp_path / "o" / "seed0001.png").unlink()
    generate_images(tmp_path / "o", network=net, seeds=[0, 1, 2], batch_size=2, skip_existing=True,
                    callback=events.append)
    assert [e.info for e in events if e.kind == "advance"] == [{"skipped": 1}, {"skipped": 2}]
    generate_images(tmp_path / "o2", network=net, seeds=[0])  # no callback: silent
    assert capsys.readouterr() == ("", "")
