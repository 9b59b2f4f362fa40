"""Training runs (styleforge.train.loop, and the run folder of styleforge.train.rundir): run folders and snapshots,
fine-tuning, exact resume (hook and SIGTERM), bad input as one line, dry runs, the train command's report."""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from train_data import (  # noqa: F401 - fixtures
    ROOT, SUB_ENV, TINY, assert_bit_identical, data, file_digest, one_thread_module, state_tensors, tiny_pair,
    train_tiny,
)


@pytest.fixture(scope="module")
def short_run(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    t0 = time.time()
    res = train_tiny(outdir=str(out), data=str(data["digits"]), kimg=0.064, mirror=True)
    res.seconds = time.time() - t0
    return res


# ---------------------------------------------------------------------------------------------------------------------
# Runs.


def test_short_run_writes_run_dir_and_usable_snapshot(short_run, tmp_path):
    from styleforge.generate import generate_images
    from styleforge.networks.checkpoint import load_network, load_networks

    run_dir = short_run.run_dir
    assert run_dir.name == "00000-digits16-mirror-cpu-kimg0.064-batch8"
    assert short_run.done and not short_run.stopped and short_run.cur_nimg == 64
    names = {p.name for p in run_dir.iterdir()}
    for f in ("log.txt", "training_options.json", "stats.jsonl", "reals.png", "fakes_init.png", "fakes000000.png",
              "fakes.gif", "network-snapshot-000000.safetensors", "resume-state.pt"):
        assert f in names, f
    assert not [n for n in names if n.endswith(".tmp")]
    opts = json.loads((run_dir / "training_options.json").read_text())
    assert opts["cfg"] == "cpu" and opts["mirror"] and opts["num_images"] == 400 and opts["G"]["z_dim"] == 32
    lines = [json.loads(x) for x in (run_dir / "stats.jsonl").read_text().splitlines()]
    assert len(lines) >= 3 and lines[-1]["Progress/kimg"]["mean"] == pytest.approx(0.064)
    for k in ("Loss/G/loss", "Loss/D/loss", "Loss/scores/real", "Timing/sec_per_kimg", "Progress/augment"):
        assert math.isfinite(lines[0][k]["mean"]), k
    assert "Loss/r1_penalty" in lines[0] and "Loss/pl_penalty" in lines[0]
    assert "tick 0" in (run_dir / "log.txt").read_text()
    import PIL.Image

    with PIL.Image.open(run_dir / "fakes.gif") as gif:
        assert gif.n_frames >= 2
    with PIL.Image.open(run_dir / "fakes000000.png") as im:
        assert im.size == (8 * 16, 8 * 16)
    # the snapshot is a normal styleforge checkpoint: G, D, G_ema; generate.py can use it
    bundle = load_networks(short_run.snapshot)
    assert set(bundle.networks) == {"G", "D", "G_ema"} and "augment_pipe.p" in bundle.tensors_extra
    assert bundle.extra["training_set_kwargs"]["resolution"] == 16
    G = load_network(short_run.snapshot)
    assert G.img_resolution == 16 and G.z_dim == 32
    res = generate_images(outdir=tmp_path / "gen", network=short_run.snapshot, seeds=[0, 1], device="cpu")
    assert len(res.files) == 2 and all(p.is_file() for p in res.files)
    # the snapshot's G_ema is the state's G_ema
    tensors, _ = state_tensors(short_run.state)
    for k, v in G.state_dict().items():
        assert torch.equal(v, tensors[f"G_ema.{k}"]), k


def test_training_changes_weights_and_fakes(short_run):
    import PIL.Image

    run_dir = short_run.run_dir
    a = np.asarray(PIL.Image.open(run_dir / "fakes_init.png"), dtype=np.int16)
    b = np.asarray(PIL.Image.open(run_dir / "fakes000000.png"), dtype=np.int16)
    assert np.abs(a - b).mean() > 0.5
    lines = [json.loads(x) for x in (run_dir / "stats.jsonl").read_text().splitlines()]
    g = [line["Loss/G/loss"]["mean"] for line in lines]
    assert max(g) - min(g) > 0.05  # the loss moves


def test_conditional_training_follows_the_class(tmp_path):
    """Labels reach G and D: on data where class k is a bright square in quadrant k, a short conditional run
    draws the square where the class says (chance: 25 %)."""
    import PIL.Image

    from styleforge.networks.checkpoint import load_networks
    from styleforge.train.dataset_tool import convert_dataset
    from styleforge.train.loop import train

    rng = np.random.RandomState(0)
    for k in range(4):
        (tmp_path / "src" / str(k)).mkdir(parents=True)
        for i in range(100):
            img = (rng.rand(16, 16) * 40).astype(np.uint8)
            y, x = divmod(k, 2)
            img[y * 8 + 2:y * 8 + 6, x * 8 + 2:x * 8 + 6] = 230
            PIL.Image.fromarray(img).save(tmp_path / "src" / str(k) / f"{i:03d}.png")
    zip_path = convert_dataset(tmp_path / "src", tmp_path / "quad.zip").dest
    r = train(outdir=str(tmp_path / "runs"), data=str(zip_path), cfg="cpu", cond=True, kimg=6, kimg_per_tick=2,
              snap=100, cbase=256, cmax=32, workers=0, aug="noaug")
    G = load_networks(r.snapshot).networks["G_ema"].eval()
    z = torch.randn(64, G.z_dim, generator=torch.Generator().manual_seed(0))
    hits = []
    for k in range(4):
        c = torch.zeros(64, 4)
        c[:, k] = 1
        with torch.no_grad():
            img = G(z, c, noise_mode="const")[:, 0]
        quads = torch.stack([img[:, y * 8:y * 8 + 8, x * 8:x * 8 + 8].mean((1, 2)) for y in (0, 1) for x in (0, 1)], 1)
        hits.append((quads.argmax(1) == k).float().mean().item())
    assert np.mean(hits) >= 0.5, hits


def test_finetune_from_snapshot(short_run, data, tmp_path):
    res = train_tiny(outdir=str(tmp_path), data=str(data["digits"]), kimg=0.016, resume=str(short_run.snapshot),
                 overrides=None)
    o = res.options
    assert o.G["z_dim"] == 32 and o.G["synthesis"]["channel_max"] == 32  # the file's architecture, not the preset's
    assert o.ada_kimg == 100 and o.ema_rampup is None and res.run_dir.name.endswith("-resumecustom")
    assert "fine-tuning from" in (res.run_dir / "log.txt").read_text()
    # before any step, G_ema is the snapshot's: the initial fakes equal the old run's last fakes
    assert (res.run_dir / "fakes_init.png").read_bytes() == (short_run.run_dir / "fakes000000.png").read_bytes()


def test_exact_resume_after_stop_hook(data, tmp_path):
    """N steps in one go == k steps, stop (the SIGTERM code path), --resume auto to N. Conditional, mirrored,
    ADA adjusting quickly, lazy regularisation crossing the stop: every tensor bit-identical."""
    kw = dict(data=str(data["digits"]), kimg=0.136, kimg_per_tick=0.024, cond=True, mirror=True, target=0.1,
              deterministic=True, overrides={**TINY, "ada_kimg": 0.2})
    a = train_tiny(outdir=str(tmp_path / "a"), **kw)
    assert a.done and a.cur_nimg == 136

    def stop_at_7(trainer):
        if trainer.batch_idx == 7:
            trainer.stop.set("test")

    b1 = train_tiny(outdir=str(tmp_path / "b"), step_callback=stop_at_7, **kw)
    assert b1.stopped and not b1.done and b1.cur_nimg == 56 and b1.state.is_file()
    # a run with another cfg in the same outdir must not be picked up by --resume auto
    other = tmp_path / "b" / "00007-other"
    other.mkdir()
    (other / "training_options.json").write_text(json.dumps({"data": kw["data"], "cfg": "paper256"}))
    shutil.copy(b1.state, other / "resume-state.pt")
    b2 = train_tiny(outdir=str(tmp_path / "b"), resume="auto", **kw)
    assert b2.run_dir == b1.run_dir and b2.done and b2.cur_nimg == 136
    assert "resuming from" in (b2.run_dir / "log.txt").read_text()
    assert_bit_identical(a.state, b2.state)
    _, st = state_tensors(a.state)
    assert st["ada"]["num_adjustments"] >= 3 and st["ada"]["p"] > 0
    # stats.jsonl holds every tick once
    ticks = [json.loads(x)["Progress/tick"]["mean"] for x in (b2.run_dir / "stats.jsonl").read_text().splitlines()]
    assert ticks == sorted(set(ticks))
    # resuming a finished run does nothing; a larger --kimg continues it
    b3 = train_tiny(outdir=str(tmp_path / "b"), resume="auto", **kw)
    assert b3.cur_nimg == 136 and b3.done


def test_sigterm_cli_saves_state_and_resumes_bit_identical(data, tmp_path):
    """The real signal: SIGTERM to a CLI training process exits 0 with a saved state, and --resume auto from it
    reaches the same weights as an uninterrupted run."""
    args = ["--data", str(data["digits"]), "--cfg", "cpu", "--batch", "8", "--kimg", "0.08", "--kimg-per-tick",
            "0.016", "--snap", "3", "--workers", "0", "--deterministic"]
    cmd = [sys.executable, str(ROOT / "scripts" / "train.py")]
    ref = subprocess.run(cmd + ["--outdir", str(tmp_path / "ref")] + args, env=SUB_ENV, capture_output=True, text=True,
                         timeout=600)
    assert ref.returncode == 0, ref.stderr[-2000:]
    out = tmp_path / "killed"
    proc = subprocess.Popen(cmd + ["--outdir", str(out)] + args, env=SUB_ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    stats = None
    while time.time() < deadline and proc.poll() is None:
        found = list(out.glob("*/stats.jsonl"))
        if found and len(found[0].read_text().splitlines()) >= 2:
            stats = found[0]
            break
        time.sleep(0.05)
    assert stats is not None, "training did not reach tick 1"
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr[-2000:]
    run_dir = stats.parent
    log = (run_dir / "log.txt").read_text()
    assert "SIGTERM received" in log and "stopped at" in log, log
    assert "stopped at" in stdout
    assert not [p for p in run_dir.iterdir() if p.name.endswith(".tmp")]
    from styleforge.train.state import load_state_file

    st = load_state_file(run_dir / "resume-state.pt")
    assert 0 < st["progress"]["cur_nimg"] < 80
    res = subprocess.run(cmd + ["--outdir", str(out), "--resume", "auto"] + args, env=SUB_ENV, capture_output=True,
                         text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    assert len(list(out.iterdir())) == 1  # continued in the same run folder
    ref_state = next((tmp_path / "ref").glob("*/resume-state.pt"))
    assert_bit_identical(ref_state, run_dir / "resume-state.pt")


def test_sigterm_to_whole_job_with_loader_workers(data, tmp_path):
    """A scheduler signals every process of the job, data-loader workers included: the run still saves its
    state and exits 0 (workers must not die of the signal and take the main process down with them)."""
    args = ["--data", str(data["digits"]), "--cfg", "cpu", "--batch", "8", "--kimg", "1", "--kimg-per-tick", "0.016",
            "--snap", "100", "--workers", "2", "--outdir", str(tmp_path / "o")]
    proc = subprocess.Popen([sys.executable, str(ROOT / "scripts" / "train.py")] + args, env=SUB_ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        found = list((tmp_path / "o").glob("*/stats.jsonl"))
        if found and len(found[0].read_text().splitlines()) >= 2:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "training ended before the signal"
    os.killpg(proc.pid, signal.SIGTERM)  # the whole process group, as SLURM does
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr[-2000:]
    assert "Traceback" not in stderr and "stopped at" in stdout
    assert list((tmp_path / "o").glob("*/resume-state.pt"))



# ---------------------------------------------------------------------------------------------------------------------
# Bad input: one line, non-zero exit, nothing written or corrupted.


def _cli(args):
    from click.testing import CliRunner

    from styleforge.commands.train import train_cmd

    return CliRunner().invoke(train_cmd, args)


def test_bad_input_errors(short_run, data, tmp_path):
    from styleforge.errors import StyleforgeError
    from styleforge.networks.checkpoint import load_networks, save_networks

    before = file_digest(short_run.run_dir)
    outdir = str(short_run.run_dir.parent)
    cases = [
        # the resumed network is 16 px, the dataset 32 px
        (["--data", str(data["digits32"]), "--resume", str(short_run.snapshot)], "16x16"),
        # a resume state on a dataset of another resolution
        (["--data", str(data["digits32"]), "--resume", str(short_run.state)], "resumed network is 16x16"),
        # unconditional network, conditional training
        (["--data", str(data["digits"]), "--resume", str(short_run.snapshot), "--cond"], "label"),
        (["--data", str(data["digits"]), "--gpus", "2", "--device", "cpu"], "torchrun"),
        (["--data", str(data["digits"]), "--metrics", "fid50k_fulll"], "--metrics"),  # a typo: lists the names
        (["--data", str(data["digits"]), "--resume", str(tmp_path / "missing.pkl")], "no such"),
        (["--data", str(tmp_path / "nothing.zip")], "no such"),
        (["--data", str(data["digits"]), "--aug", "fixed"], "--p"),
    ]
    for args, msg in cases:
        r = _cli(["--outdir", outdir, "--cfg", "cpu", "--workers", "0"] + args)
        assert r.exit_code == 1, (args, r.output)
        lines = r.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and msg in lines[0], (args, r.output)
    # label count not matching c_dim: a 10-class network on a 5-class dataset
    G, D = tiny_pair(c_dim=10)
    cond_net = tmp_path / "cond10.safetensors"
    save_networks(cond_net, {"G": G, "D": D, "G_ema": G})
    r = _cli(["--outdir", outdir, "--cfg", "cpu", "--data", str(data["digits5"]), "--cond", "--resume", str(cond_net)])
    assert r.exit_code == 1 and "5 label(s)" in r.output and "expects 10" in r.output, r.output
    # unwritable outdir (a path under a regular file; root ignores permission bits)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    r = _cli(["--outdir", str(blocker / "runs"), "--cfg", "cpu", "--data", str(data["digits"]), "--workers", "0"])
    assert r.exit_code == 1 and r.output.startswith("error: ") and "--outdir" in r.output, r.output
    # more GPUs than present (simulated CUDA machine with one device)
    from styleforge.train import distributed

    orig = (torch.cuda.is_available, torch.cuda.device_count)
    torch.cuda.is_available, torch.cuda.device_count = (lambda: True), (lambda: 1)
    try:
        with pytest.raises(StyleforgeError, match="only 1 CUDA device"):
            distributed.setup_distributed(4, "cuda")
    finally:
        torch.cuda.is_available, torch.cuda.device_count = orig
    # nothing in the existing run was touched, and no new run folder was made
    assert file_digest(short_run.run_dir) == before
    assert [p.name for p in short_run.run_dir.parent.iterdir()] == [short_run.run_dir.name]
    assert set(load_networks(short_run.snapshot).networks) == {"G", "D", "G_ema"}


def test_truncated_resume_state_error(short_run, data, tmp_path):
    """A cut-off resume-state.pt (a failed copy): one complete line naming the file, what is wrong and the way on
    (the run's last snapshot), for --resume auto and an explicit path; nothing is written."""
    runs = tmp_path / "runs"
    run_dir = runs / short_run.run_dir.name
    shutil.copytree(short_run.run_dir, run_dir)
    state = run_dir / "resume-state.pt"
    state.write_bytes(state.read_bytes()[: state.stat().st_size // 2])
    before = file_digest(run_dir)
    for resume in ("auto", str(state)):
        r = _cli(["--outdir", str(runs), "--data", str(data["digits"]), "--cfg", "cpu", "--workers", "0",
                  "--resume", resume])
        assert r.exit_code == 1, r.output
        lines = r.output.strip().splitlines()
        assert len(lines) == 1, r.output
        assert lines[0].startswith(f"error: {state}: truncated or corrupt training state ("), r.output
        snapshot = run_dir / short_run.snapshot.name
        assert lines[0].endswith(f"else move it away and continue from the last snapshot with --resume {snapshot} "
                                 "(optimiser state and progress start again)"), r.output
    assert file_digest(run_dir) == before and [p.name for p in runs.iterdir()] == [run_dir.name]


def test_dry_run_writes_nothing(data, tmp_path):
    r = _cli(["--outdir", str(tmp_path / "o"), "--cfg", "paper256", "--data", str(data["digits"]), "-n"])
    assert r.exit_code == 0, r.output
    assert '"cfg": "paper256"' in r.output and "Dry run" in r.output
    r = _cli(["--outdir", str(tmp_path / "o"), "--cfg", "cpu", "--cmax", "24", "--map", "1", "--data",
              str(data["digits"]), "-n"])
    assert r.exit_code == 0, r.output
    assert '"channel_max": 24' in r.output and '"num_layers": 1' in r.output
    assert not (tmp_path / "o").exists()



def test_only_rank_zero_reports(monkeypatch, tmp_path):
    """Under torchrun every rank returns from train(); the command prints its closing line once (rank 0)."""
    from click.testing import CliRunner

    import styleforge.train.loop as loop
    from styleforge.commands.train import train_cmd

    for rank, expected in ((0, 1), (1, 0)):
        monkeypatch.setattr(loop, "train", lambda rank=rank, **kw: loop.TrainResult(
            run_dir=tmp_path, options=None, cur_nimg=2000, done=True, rank=rank))
        r = CliRunner().invoke(train_cmd, ["--outdir", str(tmp_path), "--data", str(tmp_path)])
        assert r.exit_code == 0, r.output
        assert r.output.count("finished at 2 kimg") == expected
