"""SEGAN (styleforge.segan): the four modes, the subspace coordinates, the orthogonality term, training and
checkpoints on the shared trainer, bad input."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from train_data import ROOT, SUB_ENV, TINY, assert_bit_identical, data, one_thread_module, train_tiny  # noqa: F401

BASE = {"z_dim": 16, "w_dim": 16, "img_resolution": 16, "img_channels": 3, "mapping": {"num_layers": 2},
        "synthesis": {"channel_base": 128, "channel_max": 16}}


def segan(mode, dim=None, seed=0):
    from styleforge.segan import SeganGenerator, SeganGeneratorConfig

    torch.manual_seed(seed)
    return SeganGenerator(SeganGeneratorConfig.from_dict({**BASE, "segan": {"mode": mode, "dim": dim}})).eval()


def ws_of(G, n=2, seed=1):
    z = torch.randn(n, G.z_dim, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return G.mapping(z, None)


def test_mode0_is_plain_stylegan2():
    """Mode 0 has exactly StyleGAN2's parameters; with the same weights it makes the same images."""
    from styleforge.networks import Generator, GeneratorConfig

    torch.manual_seed(3)
    plain = Generator(GeneratorConfig.from_dict(BASE)).eval()
    G = segan(0, seed=9)
    assert sorted(G.state_dict()) == sorted(plain.state_dict())
    G.load_state_dict(plain.state_dict(), strict=True)
    z = torch.randn(3, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(G(z, None, noise_mode="const"), plain(z, None, noise_mode="const"))
    assert float(G.orthogonality()) == 0


@pytest.mark.parametrize("mode", [1, 2, 3])
def test_modes_add_their_parameters_and_change_the_image(mode):
    from styleforge.networks import Generator, GeneratorConfig

    G = segan(mode, dim=8)
    plain = Generator(GeneratorConfig.from_dict(BASE))
    extra = set(G.state_dict()) - set(plain.state_dict())
    assert set(G.state_dict()) >= set(plain.state_dict())
    want = {1: "subspace.U", 2: "subspace.U", 3: "scale"}[mode]
    assert extra and all(want.split(".")[0] in k for k in extra) and any(k.endswith(want) for k in extra)
    G.load_state_dict({**G.state_dict(), **plain.state_dict()})
    ws = ws_of(G)
    with torch.no_grad():
        a = G.synthesis(ws)
        b = plain.synthesis(ws)
    if mode == 3:  # L starts at ones: w * 1 is w, so mode 3 starts as plain StyleGAN2
        assert torch.allclose(a, b, atol=1e-6)
    else:
        assert not torch.allclose(a, b, atol=1e-3)


def test_mode2_subspace_is_what_the_docstring_says():
    """Each layer's affine layer sees U diag(L) w[:d] + mu, computed independently here."""
    G = segan(2, dim=5)
    seen = {}
    hooks = [info.layer.affine.register_forward_hook(lambda m, i, o, name=info.name: seen.__setitem__(name, i[0]))
             for info in G.layers()]
    ws = ws_of(G)
    with torch.no_grad():
        for info in G.layers():
            s = info.layer.subspace
            s.L.copy_(torch.linspace(0.5, 2, 5))
            s.mu.normal_()
        G.synthesis(ws)
    for h in hooks:
        h.remove()
    for info in G.layers():
        s = info.layer.subspace
        w = ws[:, info.slot, :5]
        want = (w * s.L) @ s.U.t() + s.mu
        assert torch.allclose(seen[info.name], want, atol=1e-6), info.name


@pytest.mark.parametrize("mode", [1, 2])
def test_one_coordinate_moves_the_output_the_others_do_not(mode):
    """Moving coordinate k of one slot changes the image, and the layer's subspace output moves by exactly
    delta * L_k * u_k. In mode 2 (w passes through the subspace) entries of w beyond the subspace dimension do not
    move the image at all; in mode 1 the full w still modulates, the subspace only adds to the feature maps."""
    G = segan(mode, dim=6)
    ws = ws_of(G, n=1)
    info = next(i for i in G.layers() if i.slot == 3 and i.coords)
    with torch.no_grad():
        base = G.synthesis(ws)
        moved = ws.clone()
        moved[:, 3, 2] += 1.5
        img = G.synthesis(moved)
        assert (img - base).abs().max() > 1e-3
        s = info.layer.subspace
        delta = s(moved[:, 3, :6]) - s(ws[:, 3, :6])
        assert torch.allclose(delta[0], 1.5 * s.L[2] * s.U[:, 2], atol=1e-6)
        outside = ws.clone()
        outside[:, :, 6:] += 3.0  # coordinates 6..15 are not in any layer's subspace
        assert torch.equal(G.synthesis(outside), base) == (mode == 2)


def test_orthogonality_term():
    from styleforge.segan.networks import Subspace

    s = Subspace(20, 6)
    assert float(s.orthogonality().detach()) < 1e-10  # orthonormal at initialisation
    with torch.no_grad():
        s.U.mul_(1.1)
    # 0.5 * ||1.21 I - I||^2 = 0.5 * 6 * 0.21^2
    assert float(s.orthogonality().detach()) == pytest.approx(0.5 * 6 * 0.21**2, rel=1e-5)
    with pytest.raises(ValueError, match="does not fit"):
        Subspace(4, 6)


def test_checkpoint_roundtrip_bit_exact_and_loads_through_zoo(tmp_path):
    from styleforge import zoo
    from styleforge.networks.checkpoint import save_networks

    G = segan(2, dim=8)
    with torch.no_grad():
        for info in G.layers():
            info.layer.subspace.L.normal_()
    path = tmp_path / "segan.safetensors"
    save_networks(path, {"G_ema": G})
    G2, _ = zoo.load_generator(str(path))
    assert type(G2).__name__ == "SeganGenerator" and G2.mode == 2 and G2.config.segan.dim == 8
    sd1, sd2 = G.state_dict(), G2.state_dict()
    assert sorted(sd1) == sorted(sd2) and all(torch.equal(sd1[k], sd2[k]) for k in sd1)
    z = torch.randn(2, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(G(z, None), G2(z, None))


@pytest.mark.parametrize("mode", [0, 1, 2, 3])
def test_each_mode_trains_a_few_steps(data, tmp_path, mode):
    from styleforge import zoo

    r = train_tiny(outdir=str(tmp_path), data=str(data["digits"]), cfg="segan", kimg=0.032, model_opts={"mode": mode},
                   overrides=TINY)
    assert r.done and f"-segan-mode{mode}-" in r.run_dir.name
    o = r.options
    assert o.model == "segan" and o.model_opts["mode"] == mode and o.lrate == 0.002 and o.gamma == 10
    assert o.G["segan"]["mode"] == mode
    stats = [__import__("json").loads(x) for x in (r.run_dir / "stats.jsonl").read_text().splitlines()]
    assert all(np.isfinite(s["Loss/G/loss"]["mean"]) and np.isfinite(s["Loss/D/loss"]["mean"]) for s in stats)
    assert all("Loss/G/orth" in s for s in stats)
    G, _ = zoo.load_generator(str(r.snapshot))
    assert type(G).__name__ == "SeganGenerator" and G.mode == mode


def test_orthogonality_falls_during_training(data, tmp_path):
    """Start from bases pushed off orthonormal; a few training steps with the term bring it down."""
    from styleforge.segan.networks import SeganGenerator

    start = {}

    def perturb(trainer):
        if trainer.batch_idx == 1 and not start:
            g = torch.Generator().manual_seed(0)
            with torch.no_grad():
                for info in trainer.G.layers():
                    if info.coords:
                        U = info.layer.subspace.U
                        U.add_(0.3 * torch.randn(U.shape, generator=g) / U.shape[0] ** 0.5)
            start["orth"] = float(trainer.G.orthogonality())
        start["last"] = float(trainer.G.orthogonality())

    r = train_tiny(outdir=str(tmp_path), data=str(data["digits"]), cfg="segan", kimg=0.08, step_callback=perturb,
                   model_opts={"mode": 2, "orth_weight": 10.0}, overrides=TINY)
    assert r.done and isinstance(SeganGenerator, type)
    assert start["orth"] > 0.01
    assert start["last"] < 0.5 * start["orth"], start


def test_mode2_resume_is_exact(data, tmp_path):
    kw = dict(data=str(data["digits"]), cfg="segan", kimg=0.064, kimg_per_tick=0.016, deterministic=True,
              model_opts={"mode": 2, "subspace_dim": 8}, overrides=TINY)
    a = train_tiny(outdir=str(tmp_path / "a"), **kw)

    def stop_at_3(trainer):
        if trainer.batch_idx == 3:
            trainer.stop.set("test")

    b1 = train_tiny(outdir=str(tmp_path / "b"), step_callback=stop_at_3, **kw)
    assert b1.stopped
    # a run of another mode in the same folder is not picked up by --resume auto
    other = train_tiny(outdir=str(tmp_path / "b"), resume="auto", **{**kw, "model_opts": {"mode": 3}, "kimg": 0.016})
    assert other.run_dir != b1.run_dir
    b2 = train_tiny(outdir=str(tmp_path / "b"), resume="auto", **kw)
    assert b2.run_dir == b1.run_dir and b2.done
    assert_bit_identical(a.state, b2.state)


def test_bad_input_cli(data, tmp_path):
    cmd = [sys.executable, str(ROOT / "scripts" / "train.py"), "--outdir", str(tmp_path), "--data",
           str(data["digits"]), "--workers", "0", "-n"]
    r = subprocess.run(cmd + ["--cfg", "segan", "--mode", "4"], env=SUB_ENV, capture_output=True, text=True)
    assert r.returncode != 0 and "--mode" in r.stderr and "0, 1, 2 or 3" in r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
    r = subprocess.run(cmd + ["--cfg", "segan", "--subspace-dim", "65"], env=SUB_ENV, capture_output=True, text=True)
    assert r.returncode != 0 and "--subspace-dim" in r.stderr and "at most 64" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    r = subprocess.run(cmd + ["--cfg", "cpu", "--mode", "2"], env=SUB_ENV, capture_output=True, text=True)
    assert r.returncode != 0 and "--mode" in r.stderr and "stylegan2" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    r = subprocess.run(cmd + ["--cfg", "segan", "--mode", "1"], env=SUB_ENV, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert '"mode": 1' in r.stdout and "-segan-mode1" in r.stdout


# ---------------------------------------------------------------------------------------------------------------------
# Semantic control and the comparison


@pytest.fixture(scope="module")
def nets(tmp_path_factory):
    from styleforge.networks.checkpoint import save_networks

    root = tmp_path_factory.mktemp("segan_nets")
    out = {}
    for mode in (0, 2, 3):
        G = segan(mode, dim=8 if mode == 2 else None)
        if mode == 2:
            with torch.no_grad():
                for info in G.layers():
                    info.layer.subspace.L.uniform_(0.5, 2)
        out[mode] = save_networks(root / f"mode{mode}.safetensors", {"G_ema": G})
    return out


def run_cli(script, *args):
    return subprocess.run([sys.executable, str(ROOT / "scripts" / script), *map(str, args)], env=SUB_ENV,
                          capture_output=True, text=True, timeout=600)


def test_control_grids_and_directions(nets, tmp_path):
    """The figure holds layer x coordinate rows and value columns; its value-0 column is generate's image of the
    seed; each row moves only its coordinate; the Directions apply through edit.py to the same pixels."""
    import PIL.Image

    from styleforge import zoo
    from styleforge.directions import load_directions
    from styleforge.directions.render import seeds_to_ws, synthesize

    out = tmp_path / "control"
    r = run_cli("segan_control.py", "--network", nets[2], "--layers", "1,4", "--dims", "0-2", "--range", "-2,2",
                "--steps", "5", "--seeds", "3", "--num-samples", "500", "--outdir", out)
    assert r.returncode == 0, r.stderr
    for name in ("control.png", "layer01.png", "layer04.png", "index.html", "coordinates.npz", "control.json"):
        assert (out / name).is_file(), name
    fig = np.asarray(PIL.Image.open(out / "control.png"))
    assert fig.shape[:2] == (6 * 16, 5 * 16)
    G, _ = zoo.load_generator(str(nets[2]))
    ws = seeds_to_ws(G, [3], 1.0)
    base = synthesize(G, ws)[0]
    tiles = fig.reshape(6, 16, 5, 16, 3).transpose(0, 2, 1, 3, 4)
    for row in range(6):
        assert np.array_equal(tiles[row, 2], base)  # value 0: the seed's own image
        assert not np.array_equal(tiles[row, 0], base)  # -2 sigma moves it
    dirs = load_directions(out / "coordinates.npz")
    assert [(d.layers, int(np.argmax(d.vector))) for d in dirs] == [((i,), k) for i in (1, 4) for k in range(3)]
    assert "control.png" in (out / "index.html").read_text()
    # edit.py with coordinate 4 (layer 4, dim 1) at strength 2 gives the figure's tile
    e = run_cli("edit.py", "--network", nets[2], "--seeds", "3", "--direction", f"{out / 'coordinates.npz'}:4",
                "--strengths", "2", "--outdir", tmp_path / "edit")
    assert e.returncode == 0, e.stderr
    edited = [p for p in (tmp_path / "edit").rglob("*.png") if "strip" not in p.name and "grid" not in p.name]
    assert any(np.array_equal(np.asarray(PIL.Image.open(p)), tiles[4, 4]) for p in edited), [p.name for p in edited]


def test_control_bad_input(nets, tmp_path):
    r = run_cli("segan_control.py", "--network", nets[2], "--dims", "7-9", "--outdir", tmp_path / "a")
    assert r.returncode != 0 and "beyond layer" in r.stderr and "--dims" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    r = run_cli("segan_control.py", "--network", nets[0], "--outdir", tmp_path / "b")
    assert r.returncode != 0 and "mode-0" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    r = run_cli("segan_control.py", "--network", "faces32", "--outdir", tmp_path / "c")
    assert r.returncode != 0 and "not a SEGAN network" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    r = run_cli("segan_control.py", "--network", nets[2], "--range", "3,-3", "--outdir", tmp_path / "d")
    assert r.returncode != 0 and "--range" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_mode3_coordinates_scale_the_style_input(nets):
    from styleforge import zoo
    from styleforge.segan.control import coordinate_directions

    G, _ = zoo.load_generator(str(nets[3]))
    dirs = coordinate_directions(G, "0", [0, 15], num_samples=200)
    assert [d.meta["dim"] for d in dirs] == [0, 15] and all(d.meta["L"] == [1.0] for d in dirs)


def test_segan_networks_work_with_the_w_tools(nets, tmp_path):
    """A SEGAN checkpoint generates, projects and edits like any StyleGAN2 network (it keeps the W space)."""
    r = run_cli("generate.py", "--network", nets[2], "--seeds", "0-1", "--outdir", tmp_path / "gen")
    assert r.returncode == 0, r.stderr
    assert len(list((tmp_path / "gen").glob("seed*.png"))) == 2
    r = run_cli("sefa.py", "--network", nets[2], "--top", "2", "--seeds", "0", "--out", tmp_path / "sefa.npz")
    assert r.returncode == 0, r.stderr


def test_compare_modes_end_to_end(data, tmp_path):
    """Two modes trained a few steps, FID and PPL with the stand-in detector (PPL in its feature space), the table,
    curves and samples; a rerun trains and measures nothing again."""
    from styleforge.metrics import MetricOptions
    from styleforge.perceptual import save_detector_standin
    from styleforge.perceptual.detectors import load_detector
    from styleforge.segan.compare import CompareConfig, compare_modes, feature_distance

    det = load_detector("inception", save_detector_standin(tmp_path / "det.pt"))
    cfg = CompareConfig(modes=(0, 2), kimg=0.032, metrics=("fid1k_full", "ppl2_wend_1k"), every_snapshot=True,
                        train=dict(batch=8, kimg_per_tick=0.016, snap=1, workers=0))
    opts = MetricOptions(num_gen=64, batch_size=32)
    import styleforge.train.loop as loop

    real_train = loop.train

    def tiny_train(**kw):  # the comparison's own call, with the tests' tiny networks
        return real_train(**kw, overrides=TINY)

    loop.train = tiny_train
    try:
        res = compare_modes(str(data["digits"]), tmp_path / "cmp", cfg, options=opts, detectors={"inception": det},
                            distance=feature_distance(det), note="stand-in detector")
    finally:
        loop.train = real_train
    rows = res["rows"]
    assert {(r["mode"], r["metric"]) for r in rows} == {(m, n) for m in (0, 2) for n in cfg.metrics}
    from styleforge.segan.compare import snapshots

    assert len(rows) == 2 * sum(len(snapshots(run)) for run in res["runs"].values())  # every snapshot
    assert all(np.isfinite(r["value"]) and r["value"] > 0 for r in rows)
    md = (tmp_path / "cmp" / "compare.md").read_text()
    assert "| 0 |" in md and "| 2 |" in md and "stand-in detector" in md
    for f in ("compare.json", "curves.png", "samples.png", "metrics.jsonl"):
        assert (tmp_path / "cmp" / f).is_file(), f
    loop.train = tiny_train
    try:
        again = compare_modes(str(data["digits"]), tmp_path / "cmp", cfg, options=opts,
                              detectors={"inception": det}, distance=feature_distance(det))
    finally:
        loop.train = real_train
    assert again["rows"] == rows  # nothing measured twice
    assert again["runs"] == res["runs"]


def test_compare_cli_bad_input(tmp_path, data):
    r = run_cli("segan_compare.py", "--data", data["digits"], "--outdir", tmp_path, "--modes", "0,4")
    assert r.returncode != 0 and "--modes" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    r = run_cli("segan_compare.py", "--data", data["digits"], "--outdir", tmp_path, "--metrics", "fid5k_full",
                "--inception", tmp_path / "missing.pt")
    assert r.returncode != 0 and "missing.pt" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_segan_network_in_the_web_ui(nets):
    """The web UI's engine opens a SEGAN checkpoint as a W network: generate equals generate.py's pixels, and the
    W tools (SeFa here) work on it."""
    import io

    import PIL.Image

    pytest.importorskip("fastapi", reason="the web UI extra")
    from styleforge import zoo
    from styleforge.directions.render import seeds_to_ws, synthesize
    from styleforge.ui.engine import Engine

    eng = Engine(network=str(nets[2]), device="cpu")
    info = eng.info()
    assert info["w_space"] and info["num_ws"] == 6
    png = eng.generate(None, [5])[0]
    G, _ = zoo.load_generator(str(nets[2]))
    assert np.array_equal(np.asarray(PIL.Image.open(io.BytesIO(png))), synthesize(G, seeds_to_ws(G, [5]))[0])
    assert len(eng.network(None).sefa("all")) > 0
