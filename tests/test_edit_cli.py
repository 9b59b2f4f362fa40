"""The editing commands (edit, learn_direction, sefa, ganspace, style_mixing): their outputs, and bad input ending
in one line, a non-zero exit and nothing written."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from conftest import ROOT, assert_one_line_error, tiny_generator
from styleforge.commands.edit import edit_cmd
from styleforge.commands.ganspace import ganspace_cmd
from styleforge.commands.generate import generate_cmd
from styleforge.commands.learn_direction import learn_direction_cmd
from styleforge.commands.sefa import sefa_cmd
from styleforge.commands.style_mixing import style_mixing_cmd
from styleforge.directions import load_direction, load_directions
from styleforge.networks.checkpoint import save_networks

pytestmark = pytest.mark.usefixtures("one_thread")


def run(cmd, args):
    return CliRunner().invoke(cmd, [str(a) for a in args])


def ok(r):
    assert r.exit_code == 0, r.output + (repr(r.exception) if r.exception else "")
    return r.output


@pytest.fixture(scope="module")
def net(tmp_path_factory):
    """A tiny 16 px generator: w_dim 32, num_ws 6."""
    return save_networks(tmp_path_factory.mktemp("net") / "g.safetensors", {"G_ema": tiny_generator()})


@pytest.fixture()
def direction(tmp_path):
    p = tmp_path / "d.npy"
    np.save(p, np.random.RandomState(0).randn(32))
    return p


@pytest.fixture()
def planted_folders(tmp_path):
    """20 + 20 projected_w.npz files (W latents, 6 layers), one folder each per side as the projector writes them
    (with projected_noise.npz next to each), split by a planted direction."""
    rs = np.random.RandomState(1)
    n_true = rs.randn(32)
    n_true /= np.linalg.norm(n_true)
    mu = rs.randn(32)
    for side, sign in (("pos", 1), ("neg", -1)):
        for i in range(20):
            d = tmp_path / side / f"photo{i:02d}"
            d.mkdir(parents=True)
            w = mu + sign * n_true + 0.1 * rs.randn(32)
            np.savez(d / "projected_w.npz", w=np.repeat(w[None, None], 6, axis=1).astype(np.float32))
            np.savez(d / "projected_noise.npz", noise_b4=rs.randn(4, 4).astype(np.float32))
    return tmp_path / "pos", tmp_path / "neg", n_true


# ---------------------------------------------------------------------------------------------------------------------
# edit

def test_edit_writes_strip_video_and_latents_per_input(tmp_path, net, direction):
    rs = np.random.RandomState(2)
    w = np.repeat(rs.randn(2, 1, 32), 6, axis=1).astype(np.float32)
    np.savez(tmp_path / "projected_w.npz", w=w)
    out = tmp_path / "out"
    ok(run(edit_cmd, ["--network", net, "--w", tmp_path / "projected_w.npz", "--seeds", "5", "--direction", direction,
                      "--strengths", "-2,0,1.5", "--layers", "0-3", "--outdir", out]))
    for k in range(3):
        strip = np.asarray(Image.open(out / f"edit{k:02d}.png"))
        assert strip.shape == (16, 48, 3)
        assert Image.open(out / f"edit{k:02d}.gif").n_frames == 4  # -2, 0, 1.5, 0 (there and back)
        for s in ("-2", "+0", "+1.5"):
            assert np.load(out / f"edit{k:02d}_s{s}.npz")["w"].shape == (1, 6, 32)
    d = load_direction(direction)
    assert np.array_equal(np.load(out / "edit00_s+0.npz")["w"][0], w[0])
    moved = np.load(out / "edit01_s+1.5.npz")["w"][0] - w[1]
    assert np.allclose(moved[:4], 1.5 * d.vector, atol=1e-5) and not moved[4:].any()
    meta = json.loads((out / "edit.json").read_text())
    assert meta["layers"] == "0-3" and meta["inputs"]["edit02"] == "seed 5" and meta["strengths"] == [-2, 0, 1.5]
    # an edited latent renders with generate.py --projected-w as it shows in the strip
    ok(run(generate_cmd, ["--network", net, "--projected-w", out / "edit01_s+1.5.npz", "--outdir", tmp_path / "g"]))
    gen = np.asarray(Image.open(tmp_path / "g" / "proj00.png")).astype(int)
    strip = np.asarray(Image.open(out / "edit01.png")).astype(int)
    assert np.abs(gen - strip[:, 32:]).max() <= 1


def test_edit_with_a_condition(tmp_path, net, direction):
    np.save(tmp_path / "c.npy", np.random.RandomState(3).randn(32))
    out = tmp_path / "out"
    ok(run(edit_cmd, ["--network", net, "--seeds", "0", "--direction", direction, "--condition", tmp_path / "c.npy",
                      "--no-video", "--outdir", out]))
    meta = json.loads((out / "edit.json").read_text())
    assert meta["direction"]["origin"] == "conditional" and meta["direction"]["conditions"] == ["c"]
    assert not list(out.glob("*.gif"))
    c = load_direction(tmp_path / "c.npy").unit().vector
    w0, w3 = (np.load(out / f"edit00_s{s}.npz")["w"][0] for s in ("+0", "+3"))
    assert abs((w3 - w0)[0] @ c) < 1e-4 and np.abs(w3 - w0).max() > 0.1


def test_edit_bad_input(tmp_path, net, direction):
    out = tmp_path / "out"
    np.save(tmp_path / "wide.npy", np.ones(512))
    assert_one_line_error(run(edit_cmd, ["--network", net, "--seeds", "0", "--direction", tmp_path / "wide.npy",
                                         "--outdir", out]), "--direction", "512 wide", "w_dim is 32")
    assert_one_line_error(run(edit_cmd, ["--network", net, "--seeds", "0", "--direction", direction, "--layers",
                                         "0-7", "--outdir", out]), "--layers 0-7", "outside", "0-5")
    np.savez(tmp_path / "ffhq_w.npz", w=np.zeros((1, 18, 512), np.float32))
    assert_one_line_error(run(edit_cmd, ["--network", net, "--w", tmp_path / "ffhq_w.npz", "--direction", direction,
                                         "--outdir", out]), "ffhq_w.npz", "[N, 6, 32]")
    assert_one_line_error(run(edit_cmd, ["--network", net, "--direction", direction, "--outdir", out]),
                          "nothing to edit")
    assert_one_line_error(run(edit_cmd, ["--network", net, "--seeds", "0", "--direction", tmp_path / "none.npy",
                                         "--outdir", out]), "--direction", "no such direction file")
    assert_one_line_error(run(edit_cmd, ["--network", net, "--seeds", "0", "--direction", direction, "--strengths",
                                         "1,x", "--outdir", out]), "--strengths", exit_code=2)
    assert_one_line_error(run(edit_cmd, ["--network", net, "--seeds", "0", "--direction", direction, "--strengths",
                                         "1,inf", "--outdir", out]), "--strengths", "finite", exit_code=2)
    assert_one_line_error(run(edit_cmd, ["--network", net, "--seeds", "0", "--direction", direction, "--strengths",
                                         "1,0,1.0", "--outdir", out]), "--strengths", "repeated")
    assert not out.exists()


# ---------------------------------------------------------------------------------------------------------------------
# learn_direction

def test_learn_direction_from_folders_of_projected_latents(tmp_path, net, planted_folders):
    pos, neg, n_true = planted_folders
    out = tmp_path / "sunglasses.npz"
    text = ok(run(learn_direction_cmd, ["--network", net, "--positive", pos, "--negative", neg, "--out", out]))
    assert "14 + 14 latents" in text and "held-out accuracy 1.000 on 6 + 6" in text, text
    d = load_direction(out)
    assert d.origin == "svm" and d.name == "sunglasses" and d.meta["val_accuracy"] == 1.0
    assert float(d.vector @ n_true) > 0.7
    info = json.loads(str(np.load(out)["meta"]))
    assert info["source"] == {"positive": str(pos), "negative": str(neg)}


def test_learn_direction_from_scores_and_scoring_functions(tmp_path, net, monkeypatch):
    rs = np.random.RandomState(4)
    ws = np.repeat(rs.randn(300, 1, 32), 6, axis=1).astype(np.float32)
    np.savez(tmp_path / "ws.npz", w=ws)
    np.save(tmp_path / "scores.npy", ws[:, 0, 0])
    out = tmp_path / "a.npz"
    ok(run(learn_direction_cmd, ["--network", net, "--latents", tmp_path / "ws.npz", "--scores",
                                 tmp_path / "scores.npy", "--chosen", 60, "--out", out]))
    assert abs(load_direction(out).vector[0]) > 0.9  # the scores were coordinate 0
    (tmp_path / "scorers.py").write_text(
        "def brightness(images):\n    return images.reshape(len(images), -1).mean(axis=1)\n"
        "def broken(images):\n    return 1 / 0\n"
        "def short(images):\n    return [1.0]\n")
    scorer = f"{tmp_path / 'scorers.py'}:brightness"
    ok(run(learn_direction_cmd, ["--network", net, "--samples", 80, "--score-fn", scorer, "--out", tmp_path / "b.npz"]))
    assert load_direction(tmp_path / "b.npz").meta["val_accuracy"] >= 0.8
    monkeypatch.syspath_prepend(str(tmp_path))
    ok(run(learn_direction_cmd, ["--network", net, "--latents", tmp_path / "ws.npz", "--score-fn", "scorers:brightness",
                                 "--out", tmp_path / "c.npz"]))
    assert (tmp_path / "c.npz").is_file()
    # a scoring function that raises: one line naming it, nothing written
    r = run(learn_direction_cmd, ["--network", net, "--samples", 40, "--score-fn", "scorers:broken",
                                  "--out", tmp_path / "d.npz"])
    assert_one_line_error(r, "--score-fn", "scorers:broken raised ZeroDivisionError")
    assert not (tmp_path / "d.npz").exists()
    assert_one_line_error(run(learn_direction_cmd, ["--network", net, "--samples", 40, "--score-fn", "scorers:short",
                                                     "--out", tmp_path / "d.npz"]), "returned 1 score(s) for 8 images")
    assert_one_line_error(run(learn_direction_cmd, ["--network", net, "--samples", 40, "--score-fn", "scorers:nope",
                                                     "--out", tmp_path / "d.npz"]), "no function 'nope'")
    assert not (tmp_path / "d.npz").exists()


def test_learn_direction_bad_input(tmp_path, net, planted_folders):
    pos, neg, _ = planted_folders
    few = tmp_path / "few"
    (few / "a").mkdir(parents=True)
    np.savez(few / "a" / "projected_w.npz", w=np.zeros((1, 6, 32), np.float32))
    out = tmp_path / "x.npz"
    assert_one_line_error(run(learn_direction_cmd, ["--network", net, "--positive", pos, "--negative", few,
                                                    "--out", out]), "--negative", "1 negative latent", "at least 2")
    other = tmp_path / "other"
    other.mkdir()
    np.savez(other / "projected_w.npz", w=np.zeros((3, 18, 512), np.float32))
    assert_one_line_error(run(learn_direction_cmd, ["--network", net, "--positive", pos, "--negative", other,
                                                    "--out", out]), "projected_w.npz", "[N, 6, 32]")
    assert_one_line_error(run(learn_direction_cmd, ["--network", net, "--positive", pos, "--out", out]),
                          "--negative")
    assert_one_line_error(run(learn_direction_cmd, ["--network", net, "--samples", 10, "--out", out]), "--score-fn")
    assert_one_line_error(run(learn_direction_cmd, ["--network", net, "--positive", pos, "--negative", neg,
                                                    "--out", tmp_path]), "--out", "is a directory", exit_code=2)
    assert not out.exists()


def test_learn_direction_from_photo_folders(tmp_path, net):
    """Photos are projected first (here already aligned: --no-align; 2 pixel-loss steps keep it fast)."""
    from styleforge.directions.render import seeds_to_ws, synthesize
    from styleforge.zoo import load_generator

    G, _ = load_generator(net)
    imgs = synthesize(G, seeds_to_ws(G, range(4)))
    for i, side in enumerate(["pos", "pos", "neg", "neg"]):
        (tmp_path / side).mkdir(exist_ok=True)
        Image.fromarray(imgs[i]).save(tmp_path / side / f"p{i}.png")
    out = tmp_path / "d.npz"
    text = ok(run(learn_direction_cmd, ["--network", net, "--positive", tmp_path / "pos", "--negative",
                                        tmp_path / "neg", "--no-align", "--num-steps", 2, "--loss", "pixel",
                                        "--out", out]))
    assert "1 + 1 latents" in text
    assert sorted(p.parent.name for p in (tmp_path / "d_work").rglob("projected_w.npz")) == ["p0", "p1", "p2", "p3"]
    assert load_direction(out).origin == "svm"


# ---------------------------------------------------------------------------------------------------------------------
# sefa, ganspace

def test_sefa_writes_grids_index_and_directions(tmp_path, net):
    out = tmp_path / "sefa"
    text = ok(run(sefa_cmd, ["--network", net, "--layers", "2-5", "--top", 3, "--seeds", "0-1", "--strengths", "-1,0,1",
                             "--outdir", out]))
    assert "eigenvalues" in text
    for k in range(3):
        assert Image.open(out / f"factor{k:02d}.png").size == (3 * 16, 2 * 16)
    assert Image.open(out / "overview.png").size == (3 * 16, 3 * 16)
    html = (out / "index.html").read_text()
    assert all(f'src="factor{k:02d}.png"' in html for k in range(3)) and "layers 2-5" in html
    dirs = load_directions(out / "sefa.npz")
    assert [d.layers for d in dirs] == [(2, 3, 4, 5)] * 3 and dirs[0].meta["eigenvalue"] >= dirs[1].meta["eigenvalue"]
    ok(run(edit_cmd, ["--network", net, "--seeds", "0", "--direction", f"{out / 'sefa.npz'}:1", "--no-video",
                      "--outdir", tmp_path / "e"]))
    assert json.loads((tmp_path / "e" / "edit.json").read_text())["layers"] == "2-5"
    assert_one_line_error(run(sefa_cmd, ["--network", net, "--layers", "6-13", "--outdir", tmp_path / "bad"]),
                          "--layers 6-13", "0-5")
    assert not (tmp_path / "bad").exists()


def test_ganspace_writes_components_and_grids(tmp_path, net):
    out = tmp_path / "pca.npz"
    ok(run(ganspace_cmd, ["--network", net, "--samples", 3000, "--components", 8, "--layers", "0-2", "--out", out,
                          "--outdir", tmp_path / "g", "--top", 2, "--seeds", "0", "--strengths", "-2,0,2"]))
    dirs = load_directions(out)
    assert len(dirs) == 8 and all(d.layers == (0, 1, 2) for d in dirs)
    stds = [d.scale for d in dirs]
    assert stds == sorted(stds, reverse=True) and stds[0] > 0
    assert len(json.loads(str(np.load(out)["meta"]))["mean"]) == 32
    assert (tmp_path / "g" / "index.html").is_file() and (tmp_path / "g" / "factor01.png").is_file()
    assert_one_line_error(run(ganspace_cmd, ["--network", net, "--samples", 100, "--components", 33, "--out", out]),
                          "--components 33")
    assert_one_line_error(run(ganspace_cmd, ["--network", net]), "--out")


# ---------------------------------------------------------------------------------------------------------------------
# style_mixing

def test_style_mixing_official_files(tmp_path, net):
    out = tmp_path / "mix"
    ok(run(style_mixing_cmd, ["--network", net, "--rows", "85,100", "--cols", "55,821,1789", "--styles", "0-2",
                              "--outdir", out]))
    names = {p.name for p in out.glob("*.png")}
    want = {f"{r}-{c}.png" for r in (85, 100) for c in (55, 821, 1789)}
    want |= {f"{s}-{s}.png" for s in (85, 100, 55, 821, 1789)}
    assert names == want | {"grid.png"}
    assert Image.open(out / "grid.png").size == (4 * 16, 3 * 16)
    assert_one_line_error(run(style_mixing_cmd, ["--network", net, "--rows", "1", "--cols", "2", "--outdir",
                                                 tmp_path / "bad"]), "--styles 0-6", "0-5")
    assert not (tmp_path / "bad").exists()


# ---------------------------------------------------------------------------------------------------------------------
# The README's images of the bundled model are what the commands make with their default flags

DOCS = ROOT / "docs"


@pytest.mark.parametrize("cmd, args, shown", [
    (sefa_cmd, [], {"overview.png": "faces32-sefa-overview.png", "factor01.png": "faces32-sefa-factor01.png"}),
    (style_mixing_cmd, ["--rows", "85,100,75", "--cols", "55,821,1789"], {"grid.png": "faces32-style-mixing.png"}),
])
def test_docs_images_are_the_default_outputs(tmp_path, cmd, args, shown):
    ok(run(cmd, args + ["--outdir", tmp_path]))
    for made, doc in shown.items():
        a = np.asarray(Image.open(tmp_path / made)).astype(int)
        b = np.asarray(Image.open(DOCS / doc)).astype(int)
        assert a.shape == b.shape
        diff = np.abs(a - b)
        assert diff.max() <= 1 and (diff > 0).mean() < 0.01  # float rounding differs between CPUs


def test_learn_direction_without_scikit_learn(tmp_path, net, planted_folders, monkeypatch):
    import sys

    pos, neg, _ = planted_folders
    monkeypatch.setitem(sys.modules, "sklearn", None)  # import sklearn.svm now raises ImportError
    monkeypatch.setitem(sys.modules, "sklearn.svm", None)
    r = run(learn_direction_cmd, ["--network", net, "--positive", pos, "--negative", neg, "--out", tmp_path / "x.npz"])
    assert_one_line_error(r, "scikit-learn", "pip install 'styleforge[edit]'")
    assert not (tmp_path / "x.npz").exists()
