"""Training: presets, loss terms, run folders and snapshots, exact resume (hook and SIGTERM), torchrun, bad input.

Everything runs tiny networks (16 px, 32 channels) on a 200-image dataset built from sklearn's digits, on one
CPU thread (faster than two for nets this small, and immune to a busy machine).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
TINY = {"G": {"z_dim": 32, "w_dim": 32, "synthesis": {"channel_base": 256, "channel_max": 32}},
        "D": {"channel_base": 256, "channel_max": 32}}
SUB_ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "src")}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(prev)


def _digits(folder: Path, n: int, classes=range(10), size: int = 16) -> Path:
    """``n`` sklearn digits as RGB PNGs in class subfolders (so the dataset has labels)."""
    import PIL.Image
    from sklearn.datasets import load_digits

    d = load_digits()
    keep = [i for i in range(len(d.target)) if d.target[i] in set(classes)][:n]
    for i in keep:
        (folder / str(d.target[i])).mkdir(parents=True, exist_ok=True)
        img = (d.images[i] / 16 * 255).astype(np.uint8)
        PIL.Image.fromarray(img).resize((size, size), PIL.Image.BILINEAR).convert("RGB").save(
            folder / str(d.target[i]) / f"{i:04d}.png")
    return folder


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from styleforge.train.dataset import convert_dataset

    root = tmp_path_factory.mktemp("train_data")
    out = {}
    out["digits"] = convert_dataset(_digits(root / "src", 200), root / "digits16.zip", resolution=16, progress=False).dest
    out["digits5"] = convert_dataset(_digits(root / "src5", 100, classes=range(5)), root / "digits5.zip",
                                     resolution=16, progress=False).dest
    out["digits32"] = convert_dataset(root / "src", root / "digits32.zip", resolution=32, max_images=50,
                                      progress=False).dest
    return out


def _train(**kw):
    from styleforge.train.loop import train

    base = dict(cfg="cpu", batch=8, kimg_per_tick=0.016, snap=2, workers=0, overrides=TINY, echo=False)
    base.update(kw)
    return train(**base)


@pytest.fixture(scope="module")
def short_run(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    t0 = time.time()
    res = _train(outdir=str(out), data=str(data["digits"]), kimg=0.064, mirror=True)
    res.seconds = time.time() - t0
    return res


def _file_digest(folder: Path) -> dict:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def _state_tensors(path: Path) -> dict:
    from styleforge.train.loop import load_state_file

    st = load_state_file(path)
    out = {}
    for net, tensors in st["networks"].items():
        for k, v in tensors.items():
            out[f"{net}.{k}"] = v
    for o, sd in st["optimizers"].items():
        for i, s in sd["state"].items():
            for k, v in s.items():
                out[f"opt{o}.{i}.{k}"] = v
    out["pl_mean"] = st["pl_mean"]
    if st["augment_p"] is not None:
        out["augment_p"] = st["augment_p"]
    return out, st


def _assert_bit_identical(a: Path, b: Path) -> None:
    ta, sa = _state_tensors(a)
    tb, sb = _state_tensors(b)
    assert sorted(ta) == sorted(tb)
    diff = [k for k in ta if not torch.equal(ta[k], tb[k])]
    assert not diff, f"{len(diff)} tensors differ, e.g. {diff[:5]}"
    assert sa["ada"] == sb["ada"]
    for k in ("cur_nimg", "batch_idx", "cur_tick", "tick_start_nimg"):
        assert sa["progress"][k] == sb["progress"][k]


# ---------------------------------------------------------------------------------------------------------------------
# Presets and options.


def test_presets_resolve():
    from styleforge.train.presets import PRESETS, resolve_options, resolve_preset

    assert set(PRESETS) == {"auto", "stylegan2", "paper256", "paper512", "paper1024", "cifar", "cpu"}
    a = resolve_preset("auto", 256, gpus=1)
    assert (a.batch, a.mbstd, a.channel_base, a.lrate, a.ema_kimg, a.ema_rampup, a.map_layers) == \
        (16, 4, 16384, 0.0025, 5.0, 0.05, 2)
    assert math.isclose(a.gamma, 0.0002 * 256**2 / 16)
    a = resolve_preset("auto", 1024, gpus=8)
    assert (a.batch, a.mbstd, a.channel_base, a.lrate) == (32, 4, 32768, 0.002)
    p = resolve_preset("paper256", 256)
    assert (p.batch, p.mbstd, p.channel_base, p.gamma, p.ema_kimg, p.ema_rampup, p.map_layers, p.ref_gpus) == \
        (64, 8, 16384, 1, 20, None, 8, 8)
    c = resolve_preset("cifar", 32)
    assert (c.pl_weight, c.style_mixing_prob, c.d_architecture, c.batch, c.mbstd, c.gamma) == (0, 0, "orig", 64, 32, 0.01)
    s = resolve_preset("stylegan2", 1024)
    assert (s.batch, s.gamma, s.lrate, s.channel_base) == (32, 10, 0.002, 32768)
    cpu = resolve_preset("cpu", 32)
    assert cpu.map_layers == 2 and 128 <= cpu.z_dim <= 256 and 4096 <= cpu.channel_base <= 8192
    assert 128 <= cpu.channel_max <= 256 and 16 <= cpu.batch <= 32 and cpu.mbstd == 4
    assert math.isclose(cpu.gamma, 0.0002 * 32**2 / cpu.batch) and cpu.ema_kimg == 10 and cpu.ema_rampup == 0.05
    for name in PRESETS:
        for res in (32, 256, 1024):
            o = resolve_options(data="x.zip", dataset_name="x", resolution=res, num_channels=3, num_images=100,
                                label_dim=0, cfg=name)
            assert o.batch % (o.batch_gpu * o.gpus) == 0 and o.batch_gpu >= 1
            from styleforge.networks import DiscriminatorConfig, GeneratorConfig

            GeneratorConfig.from_dict(o.G)
            DiscriminatorConfig.from_dict(o.D)
    # paper256 on one process: global batch 64 in 8 accumulation rounds of 8 (official batch_gpu = mb // ref_gpus)
    o = resolve_options(data="x", dataset_name="x", resolution=256, num_channels=3, num_images=1, label_dim=0,
                        cfg="paper256")
    assert (o.batch, o.batch_gpu, o.rounds) == (64, 8, 8)


def test_options_json_and_desc():
    from styleforge.train.presets import TrainingOptions, resolve_options

    o = resolve_options(data="/d/faces.zip", dataset_name="faces", resolution=64, num_channels=3, num_images=10,
                        label_dim=3, cfg="auto", cond=True, mirror=True, gamma=0.5, kimg=100, batch=16,
                        aug="fixed", p=0.2, augpipe="bg")
    assert o.desc == "faces-cond-mirror-auto1-gamma0.5-kimg100-batch16-fixed-p0.2-bg"
    assert o.G["c_dim"] == 3 and o.D["c_dim"] == 3 and o.gamma == 0.5 and o.p == 0.2
    back = TrainingOptions.from_dict(json.loads(o.to_json()))
    assert back == o
    o = resolve_options(data="x", dataset_name="x", resolution=32, num_channels=1, num_images=1, label_dim=0,
                        cfg="cpu", resume="net.pkl")
    assert o.ada_kimg == 100 and o.ema_rampup is None and o.desc.endswith("-resumecustom")
    # capacity flags (the StyleGAN3 train.py names) reach both networks and the run description
    o = resolve_options(data="x", dataset_name="x", resolution=32, num_channels=1, num_images=1, label_dim=0,
                        cfg="cpu", cbase=1024, cmax=64, map_layers=3)
    assert o.desc == "x-cpu-cbase1024-cmax64-map3"
    assert o.G["synthesis"]["channel_base"] == 1024 and o.G["synthesis"]["channel_max"] == 64
    assert o.D["channel_base"] == 1024 and o.D["channel_max"] == 64 and o.G["mapping"]["num_layers"] == 3
    # one settings object; keywords replace its fields; a misspelt setting is refused
    from styleforge.train.presets import TrainSettings

    s = TrainSettings(cfg="cpu", cbase=1024, cmax=64, map_layers=3, gamma=0.5)
    o2 = resolve_options(data="x", dataset_name="x", resolution=32, num_channels=1, num_images=1, label_dim=0,
                         settings=s, gamma=None)
    assert o2.desc == o.desc and o2.G == o.G and s.gamma == 0.5
    with pytest.raises(TypeError, match="gama"):
        resolve_options(data="x", dataset_name="x", resolution=32, num_channels=1, num_images=1, label_dim=0, gama=1)


def test_option_errors():
    from styleforge.errors import StyleforgeError
    from styleforge.train.presets import resolve_options

    base = dict(data="x", dataset_name="x", resolution=32, num_channels=3, num_images=10, label_dim=0)
    for kw, msg in [({"cond": True}, "no labels"), ({"p": 0.3}, "--aug fixed"), ({"aug": "fixed"}, "needs --p"),
                    ({"target": 0.5, "aug": "noaug"}, "--aug ada"), ({"augpipe": "bgcfnc"}, "not implemented"),
                    ({"batch": 6, "gpus": 4}, "divisible"), ({"cmax": 0}, "--cmax 0"), ({"map_layers": 40}, "--map 40"), ({"gpus": 3}, "power of two"), ({"cfg": "nope"}, "unknown")]:
        with pytest.raises(StyleforgeError, match=msg):
            resolve_options(**base, **kw)


# ---------------------------------------------------------------------------------------------------------------------
# Loss.


def _tiny_pair(c_dim=0):
    from styleforge.networks import Discriminator, DiscriminatorConfig, Generator, GeneratorConfig

    torch.manual_seed(0)
    G = Generator(GeneratorConfig.from_dict({"z_dim": 16, "w_dim": 16, "c_dim": c_dim, "img_resolution": 16,
                                             "mapping": {"num_layers": 2},
                                             "synthesis": {"channel_base": 128, "channel_max": 16}})).train()
    D = Discriminator(DiscriminatorConfig.from_dict({"c_dim": c_dim, "img_resolution": 16, "channel_base": 128,
                                                     "channel_max": 16})).train()
    return G, D


def _grads(module):
    return {n: p.grad.clone() for n, p in module.named_parameters() if p.grad is not None}


def test_loss_terms_finite_and_regularisers_change_gradients():
    from styleforge.train.loss import StyleGAN2Loss

    G, D = _tiny_pair(c_dim=3)
    real = torch.rand(8, 3, 16, 16) * 2 - 1
    c = torch.eye(3)[torch.arange(8) % 3]
    z = torch.randn(8, 16)

    def run(phase, module, gamma=1.0, pl_weight=2.0, seed=1):
        loss = StyleGAN2Loss(G, D, r1_gamma=gamma, pl_weight=pl_weight)
        for m in (G, D):
            m.requires_grad_(m is module)
            m.zero_grad(set_to_none=True)
        torch.manual_seed(seed)
        stats = loss.accumulate_gradients(phase, real, c, z, c)
        for v in stats.values():
            assert torch.isfinite(v).all()
        return stats, _grads(module), loss

    s, g_main, _ = run("Gmain", G)
    assert {"Loss/G/loss", "Loss/scores/fake", "Loss/signs/fake"} <= set(s) and g_main
    s, g_reg, loss = run("Greg", G)
    assert "Loss/pl_penalty" in s and "Loss/G/reg" in s and g_reg
    assert loss.pl_mean.item() > 0  # running mean moved away from 0
    _, g_both, _ = run("Gboth", G)
    assert any(not torch.allclose(g_both[k], g_main[k]) for k in g_main), "path-length term must change G's gradients"
    _, g_nopl, _ = run("Gboth", G, pl_weight=0)
    assert all(torch.allclose(g_nopl[k], g_main[k], atol=1e-6) for k in g_main)

    s, d_main, _ = run("Dmain", D)
    assert {"Loss/D/loss", "Loss/scores/real", "Loss/signs/real"} <= set(s) and d_main
    s, d_reg, _ = run("Dreg", D, gamma=10.0)
    assert "Loss/r1_penalty" in s and float(s["Loss/r1_penalty"].mean()) > 0 and d_reg
    _, d_both, _ = run("Dboth", D, gamma=10.0)
    assert any(not torch.allclose(d_both[k], d_main[k]) for k in d_main), "R1 must change D's gradients"
    _, d_reg0, _ = run("Dreg", D, gamma=0.0)
    assert not d_reg0  # gamma 0: no R1 term at all


def test_style_mixing_cutoff_distribution():
    from styleforge.train.loss import StyleGAN2Loss

    G, D = _tiny_pair()
    z = torch.randn(4, 16)
    torch.manual_seed(0)
    loss = StyleGAN2Loss(G, D, style_mixing_prob=0.9)
    ws = G.mapping(z, None, update_w_avg=False)
    num_ws = ws.shape[1]
    cutoffs = []
    for _ in range(400):
        mixed = loss.mix_styles(ws, z, None)
        same = (mixed == ws).all(dim=2).all(dim=0)  # per layer
        cut = int((~same).nonzero()[0]) if (~same).any() else num_ws
        assert same[:cut].all() and not same[cut:].any()  # one contiguous switch point
        cutoffs.append(cut)
    cutoffs = np.array(cutoffs)
    assert cutoffs.min() >= 1 and cutoffs.max() <= num_ws
    frac_unmixed = (cutoffs == num_ws).mean()
    assert 0.04 < frac_unmixed < 0.2  # 1 - p = 0.1 plus nothing else (cutoff is drawn in [1, num_ws))
    assert set(cutoffs[cutoffs < num_ws]) == set(range(1, num_ws))
    assert (StyleGAN2Loss(G, D, style_mixing_prob=0).mix_styles(ws, z, None) == ws).all()


def test_augment_applied_to_reals_and_fakes():
    from styleforge.train.loss import StyleGAN2Loss

    class Spy(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.calls = 0

        def forward(self, x):
            self.calls += 1
            return x.flip(3)

    G, D = _tiny_pair()
    spy = Spy()
    loss = StyleGAN2Loss(G, D, augment_pipe=spy, r1_gamma=1)
    real = torch.rand(4, 3, 16, 16)
    z = torch.randn(4, 16)
    expected = {"Gmain": 1, "Greg": 0, "Dmain": 2, "Dreg": 1}
    for phase, n in expected.items():
        spy.calls = 0
        (G if phase.startswith("G") else D).requires_grad_(True)
        loss.accumulate_gradients(phase, real, None, z, None)
        assert spy.calls == n, phase


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
    tensors, _ = _state_tensors(short_run.state)
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
    from styleforge.train.dataset import convert_dataset
    from styleforge.train.loop import train

    rng = np.random.RandomState(0)
    for k in range(4):
        (tmp_path / "src" / str(k)).mkdir(parents=True)
        for i in range(100):
            img = (rng.rand(16, 16) * 40).astype(np.uint8)
            y, x = divmod(k, 2)
            img[y * 8 + 2:y * 8 + 6, x * 8 + 2:x * 8 + 6] = 230
            PIL.Image.fromarray(img).save(tmp_path / "src" / str(k) / f"{i:03d}.png")
    zip_path = convert_dataset(tmp_path / "src", tmp_path / "quad.zip", progress=False).dest
    r = train(outdir=str(tmp_path / "runs"), data=str(zip_path), cfg="cpu", cond=True, kimg=6, kimg_per_tick=2,
              snap=100, cbase=256, cmax=32, workers=0, aug="noaug", echo=False)
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
    res = _train(outdir=str(tmp_path), data=str(data["digits"]), kimg=0.016, resume=str(short_run.snapshot),
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
    a = _train(outdir=str(tmp_path / "a"), **kw)
    assert a.done and a.cur_nimg == 136

    def stop_at_7(trainer):
        if trainer.batch_idx == 7:
            trainer.stop.set("test")

    b1 = _train(outdir=str(tmp_path / "b"), step_callback=stop_at_7, **kw)
    assert b1.stopped and not b1.done and b1.cur_nimg == 56 and b1.state.is_file()
    # a run with another cfg in the same outdir must not be picked up by --resume auto
    other = tmp_path / "b" / "00007-other"
    other.mkdir()
    (other / "training_options.json").write_text(json.dumps({"data": kw["data"], "cfg": "paper256"}))
    shutil.copy(b1.state, other / "resume-state.pt")
    b2 = _train(outdir=str(tmp_path / "b"), resume="auto", **kw)
    assert b2.run_dir == b1.run_dir and b2.done and b2.cur_nimg == 136
    assert "resuming from" in (b2.run_dir / "log.txt").read_text()
    _assert_bit_identical(a.state, b2.state)
    _, st = _state_tensors(a.state)
    assert st["ada"]["num_adjustments"] >= 3 and st["ada"]["p"] > 0
    # stats.jsonl holds every tick once
    ticks = [json.loads(x)["Progress/tick"]["mean"] for x in (b2.run_dir / "stats.jsonl").read_text().splitlines()]
    assert ticks == sorted(set(ticks))
    # resuming a finished run does nothing; a larger --kimg continues it
    b3 = _train(outdir=str(tmp_path / "b"), resume="auto", **kw)
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
    from styleforge.train.loop import load_state_file

    st = load_state_file(run_dir / "resume-state.pt")
    assert 0 < st["progress"]["cur_nimg"] < 80
    res = subprocess.run(cmd + ["--outdir", str(out), "--resume", "auto"] + args, env=SUB_ENV, capture_output=True,
                         text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    assert len(list(out.iterdir())) == 1  # continued in the same run folder
    ref_state = next((tmp_path / "ref").glob("*/resume-state.pt"))
    _assert_bit_identical(ref_state, run_dir / "resume-state.pt")


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


TORCHRUN_DRIVER = r'''
import builtins, hashlib, json, os, sys, tempfile
import torch
rank = int(os.environ["RANK"])
outdir, result = sys.argv[1], sys.argv[2]
writes = []
if rank != 0:  # record every file this process creates, opens for writing or renames
    _open = builtins.open
    def spy_open(f, mode="r", *a, **k):
        if any(ch in mode for ch in "wax+"):
            writes.append(str(f))
        return _open(f, mode, *a, **k)
    builtins.open = spy_open
    for name in ("replace", "rename", "mkdir", "makedirs"):
        def spy(*a, _orig=getattr(os, name), _name=name, **k):
            writes.append(f"{_name}:{a[0]}")
            return _orig(*a, **k)
        setattr(os, name, spy)
    _mkstemp = tempfile.mkstemp
    def spy_mkstemp(*a, **k):
        writes.append("mkstemp:" + str(k.get("dir")))
        return _mkstemp(*a, **k)
    tempfile.mkstemp = spy_mkstemp
from styleforge.train.loop import train
digests = []
def cb(tr):
    h = hashlib.sha256()
    for m in (tr.G, tr.D, tr.G_ema):
        for t in list(m.parameters()) + list(m.buffers()):
            h.update(t.detach().cpu().numpy().tobytes())
    for opt in tr.opt.values():
        for s in opt.state.values():
            for v in s.values():
                h.update(v.detach().cpu().numpy().tobytes())
    h.update(tr.loss.pl_mean.numpy().tobytes())
    h.update(tr.augment_pipe.p.numpy().tobytes())
    digests.append(h.hexdigest())
r = train(outdir=outdir, data=os.environ["DATA"], cfg="cpu", batch=8, kimg=0.048, kimg_per_tick=0.016, snap=2,
          workers=1, overrides=json.loads(os.environ["TINY"]), echo=rank == 0, step_callback=cb, seed=3,
          target=0.2, mirror=True)
mine = [w for w in writes if outdir in w]
payload = json.dumps({"digests": digests, "writes": mine, "run_dir": str(r.run_dir)})
with builtins.open(result + f".rank{rank}", "w") as f:
    f.write(payload)
'''


def _process_tree(pid: int) -> list:
    """``pid`` and all its descendants (Linux /proc)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        for f in Path(f"/proc/{p}/task").glob("*/children"):
            with contextlib.suppress(OSError):
                todo += [int(c) for c in f.read_text().split()]
    return out


def _signal_tree(pid: int, sig: int) -> None:
    for p in _process_tree(pid):
        with contextlib.suppress(OSError):
            os.kill(p, sig)


TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]


def _start_job(cmd, env) -> subprocess.Popen:
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def _finish_job(proc: subprocess.Popen, timeout: float) -> subprocess.CompletedProcess:
    """Wait for ``proc``; past ``timeout`` seconds kill it and all its descendants (torchrun starts each rank in a
    session of its own) and fail: a hung rank or data-loader worker fails the test instead of hanging the suite."""
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _signal_tree(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
        pytest.fail(f"{proc.args[2:4]} did not exit within {timeout} s:\n{stdout[-2000:]}\n{stderr[-2000:]}")
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


def test_torchrun_two_processes(data, tmp_path):
    """Two ranks with a data-loader worker each: identical weights, only rank 0 writes, and the job exits."""
    driver = tmp_path / "driver.py"
    driver.write_text(TORCHRUN_DRIVER)
    out = tmp_path / "out"
    env = {**SUB_ENV, "DATA": str(data["digits"]), "TINY": json.dumps(TINY)}
    proc = _finish_job(_start_job(TORCHRUN + [str(driver), str(out), str(tmp_path / "result")], env), timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0 = json.loads((tmp_path / "result.rank0").read_text())
    r1 = json.loads((tmp_path / "result.rank1").read_text())
    assert len(r0["digests"]) == 6 and r0["digests"] == r1["digests"]  # identical weights after every step
    assert r1["writes"] == []  # rank 1 wrote nothing into the run folder
    run_dirs = list(out.iterdir())
    assert len(run_dirs) == 1 and run_dirs[0].name == "00000-digits16-mirror-cpu-kimg0.048-batch8-target0.2"
    opts = json.loads((run_dirs[0] / "training_options.json").read_text())
    assert opts["gpus"] == 2 and opts["batch_gpu"] == 4
    two = [json.loads(x) for x in (run_dirs[0] / "stats.jsonl").read_text().splitlines()]
    # The same run in one process, in 2 accumulation rounds of 4 (so that minibatch-stddev groups match): same
    # init, latents, data order and gradient average; only the per-process noise/mixing draws differ.
    one = _train(outdir=str(tmp_path / "single"), data=str(data["digits"]), kimg=0.048, seed=3, target=0.2,
                 mirror=True, overrides={**TINY, "batch_gpu": 4})
    one = [json.loads(x) for x in (one.run_dir / "stats.jsonl").read_text().splitlines()]
    assert len(one) == len(two)
    for k in ("Loss/G/loss", "Loss/D/loss", "Loss/scores/real", "Loss/r1_penalty"):
        a, b = one[0][k]["mean"], two[0][k]["mean"]
        assert math.isfinite(b) and abs(a - b) < 0.1 * abs(a) + 0.01, (k, a, b)
    for line in two:
        assert all(math.isfinite(v["mean"]) for k, v in line.items() if k.startswith("Loss/"))
    assert one[0]["Loss/G/loss"]["num"] == two[0]["Loss/G/loss"]["num"]  # every sample reported once


# Each rank through a shell that records how it exited, its output in files of its own (torchrun's own output is
# interleaved with the ranks' otherwise). The shell traps the signals so that only the rank reacts to them.
RANK_SHELL = 'trap : TERM INT; "$0" "$@" >"$RANK_DIR/out$RANK" 2>"$RANK_DIR/err$RANK"; echo $? >"$RANK_DIR/rc$RANK"'


@pytest.mark.parametrize("to", ["agent", "job"])
def test_torchrun_sigterm_saves_state_and_resumes(data, tmp_path, to):
    """SIGTERM to torchrun alone (it forwards it to each rank and its loader workers) or to every process of the
    job (SLURM preemption): each rank finishes the step and exits 0 without a traceback, rank 0 saved the state,
    and --resume auto continues the run. (torchrun itself then reports the signal with a traceback and exits 1,
    whatever the script does: that is its agent's behaviour, not asserted here.)"""
    out, ranks = tmp_path / "o", tmp_path / "ranks"
    ranks.mkdir()
    args = ["--outdir", str(out), "--data", str(data["digits"]), "--cfg", "cpu", "--cbase", "256", "--cmax", "32",
            "--batch", "8", "--kimg-per-tick", "0.016", "--snap", "100", "--workers", "1", "--gpus", "2"]
    env = {**SUB_ENV, "RANK_DIR": str(ranks)}
    # torchrun SIGKILLs ranks still finishing after --shutdown-timeout (30 s): on a loaded 2-core machine finishing
    # the step and saving took longer once, so the test gives the ranks the time a large network would need
    torchrun = TORCHRUN[:-2] + ["--shutdown-timeout", "120"] + TORCHRUN[-2:]
    proc = _start_job(torchrun + ["--no-python", "bash", "-c", RANK_SHELL, sys.executable,
                                  str(ROOT / "scripts" / "train.py"), "--kimg", "1"] + args, env)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        found = list(out.glob("*/stats.jsonl"))
        if found and len(found[0].read_text().splitlines()) >= 2:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "training ended before the signal"
    if to == "agent":
        os.kill(proc.pid, signal.SIGTERM)
    else:
        _signal_tree(proc.pid, signal.SIGTERM)
    _finish_job(proc, timeout=120)
    for r in (0, 1):
        err = (ranks / f"err{r}").read_text()
        rc = ranks / f"rc{r}"
        assert rc.is_file(), f"rank {r} was killed (by torchrun, past its shutdown timeout?): {err[-2000:]}"
        assert rc.read_text().strip() == "0", (r, err[-2000:])
        assert "Traceback" not in err, (r, err[-2000:])
    assert "stopped at" in (ranks / "out0").read_text()
    (run_dir,) = out.iterdir()
    assert "SIGTERM received" in (run_dir / "log.txt").read_text()
    from styleforge.train.loop import load_state_file

    stopped = load_state_file(run_dir / "resume-state.pt")["progress"]["cur_nimg"]
    assert 0 < stopped < 1000
    kimg = (stopped + 16) / 1000  # two more steps
    res = _finish_job(_start_job(TORCHRUN + [str(ROOT / "scripts" / "train.py"), "--kimg", str(kimg),
                                             "--resume", "auto"] + args, SUB_ENV), timeout=120)
    assert res.returncode == 0, res.stderr[-3000:]
    assert [p.name for p in out.iterdir()] == [run_dir.name]  # continued in the same run folder
    assert load_state_file(run_dir / "resume-state.pt")["progress"]["cur_nimg"] == stopped + 16
    log = (run_dir / "log.txt").read_text()
    assert f"resuming from {run_dir / 'resume-state.pt'} at {stopped / 1000:g} kimg" in log


# ---------------------------------------------------------------------------------------------------------------------
# Bad input: one line, non-zero exit, nothing written or corrupted.


def _cli(args):
    from click.testing import CliRunner

    from styleforge.commands.train import train_cmd

    return CliRunner().invoke(train_cmd, args)


def test_bad_input_errors(short_run, data, tmp_path):
    from styleforge.errors import StyleforgeError
    from styleforge.networks.checkpoint import load_networks, save_networks

    before = _file_digest(short_run.run_dir)
    outdir = str(short_run.run_dir.parent)
    cases = [
        # the resumed network is 16 px, the dataset 32 px
        (["--data", str(data["digits32"]), "--resume", str(short_run.snapshot)], "16x16"),
        # a resume state on a dataset of another resolution
        (["--data", str(data["digits32"]), "--resume", str(short_run.state)], "resumed network is 16x16"),
        # unconditional network, conditional training
        (["--data", str(data["digits"]), "--resume", str(short_run.snapshot), "--cond"], "label"),
        (["--data", str(data["digits"]), "--gpus", "2", "--device", "cpu"], "torchrun"),
        (["--data", str(data["digits"]), "--metrics", "fid50k_full"], "metrics"),
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
    G, D = _tiny_pair(c_dim=10)
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
    from styleforge.train import loop

    orig = (torch.cuda.is_available, torch.cuda.device_count)
    torch.cuda.is_available, torch.cuda.device_count = (lambda: True), (lambda: 1)
    try:
        with pytest.raises(StyleforgeError, match="only 1 CUDA device"):
            loop.setup_distributed(4, "cuda")
    finally:
        torch.cuda.is_available, torch.cuda.device_count = orig
    # nothing in the existing run was touched, and no new run folder was made
    assert _file_digest(short_run.run_dir) == before
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
    before = _file_digest(run_dir)
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
    assert _file_digest(run_dir) == before and [p.name for p in runs.iterdir()] == [run_dir.name]


def test_dry_run_writes_nothing(data, tmp_path):
    r = _cli(["--outdir", str(tmp_path / "o"), "--cfg", "paper256", "--data", str(data["digits"]), "-n"])
    assert r.exit_code == 0, r.output
    assert '"cfg": "paper256"' in r.output and "Dry run" in r.output
    r = _cli(["--outdir", str(tmp_path / "o"), "--cfg", "cpu", "--cmax", "24", "--map", "1", "--data",
              str(data["digits"]), "-n"])
    assert r.exit_code == 0, r.output
    assert '"channel_max": 24' in r.output and '"num_layers": 1' in r.output
    assert not (tmp_path / "o").exists()


# ---------------------------------------------------------------------------------------------------------------------
# Pieces.


def test_data_order_is_stateless_and_partitioned(data):
    from styleforge.train.loop import SampleOrder, open_dataset

    n, batch = 50, 8
    full = SampleOrder(n, seed=5, batch=batch)
    it = iter(full)
    steps = [next(it) for _ in range(20)]
    flat = [i for s in steps for i in s]
    for e in range(3):  # each epoch is a permutation of the dataset
        assert sorted(flat[e * n:(e + 1) * n]) == list(range(n))
    assert flat[:n] != flat[n:2 * n]  # a new order every epoch
    later = iter(SampleOrder(n, seed=5, batch=batch, start_step=13))
    assert [next(later) for _ in range(7)] == steps[13:]  # resuming needs only the step counter
    for s in (0, 7, 19):  # two processes split each global batch
        r0 = SampleOrder(n, 5, batch, rank=0, world=2).indices(s)
        r1 = SampleOrder(n, 5, batch, rank=1, world=2).indices(s)
        assert r0 + r1 == steps[s]
    # loader workers deliver the same batches in the same order
    ds = open_dataset(str(data["digits"]), cond=False)
    outs = []
    for workers in (0, 2):
        loader = torch.utils.data.DataLoader(ds, batch_sampler=SampleOrder(len(ds), 5, batch, start_step=3),
                                             num_workers=workers, generator=torch.Generator().manual_seed(0))
        it = iter(loader)
        outs.append(torch.cat([next(it)[0] for _ in range(4)]))
        del it
    assert torch.equal(outs[0], outs[1])


def test_tensorboard_scalars_and_images_when_available(data, tmp_path, monkeypatch):
    import types

    from styleforge.train.loop import Trainer
    from styleforge.train.presets import TrainingOptions, resolve_options

    calls = []

    class FakeWriter:
        def __init__(self, logdir):
            calls.append(("init", logdir))

        def add_scalar(self, tag, value, global_step=None):
            calls.append(("scalar", tag))

        def add_image(self, tag, img, global_step=None, dataformats="CHW"):
            calls.append(("image", tag, img.shape, dataformats))

        def flush(self):
            pass

        def close(self):
            calls.append(("close",))

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", types.SimpleNamespace(SummaryWriter=FakeWriter))
    o = resolve_options(data=str(data["digits"]), dataset_name="d", resolution=16, num_channels=3, num_images=200,
                        label_dim=10, cfg="cpu", batch=8, workers=0)
    from styleforge.train.loop import _deep_update

    o = TrainingOptions.from_dict(_deep_update(o.to_dict(), {**TINY, "grid": [4, 2]}))
    tr = Trainer(o, run_dir=tmp_path)
    tr.step()
    tr._write_stats(tr._tick_report(1.0, 0.008, 0.0))
    tr.save_images("fakes000000.png")
    assert ("init", str(tmp_path)) in calls
    assert ("scalar", "Loss/G/loss") in calls and ("scalar", "Progress/augment") in calls
    assert ("image", "fakes", (2 * 16, 4 * 16, 3), "HWC") in calls


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
