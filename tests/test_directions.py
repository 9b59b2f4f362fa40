"""styleforge.directions, the library: Direction files, apply / sweep / conditional editing, the SVM, SeFa, GANSpace
and style mixing, each checked against a planted answer or the official semantics."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from conftest import tiny_generator
from styleforge.directions import (Direction, apply, condition, load_direction, load_directions, parse_layers,
                                   save_directions, score, sweep)
from styleforge.directions.ganspace import StreamingCovariance, ganspace_directions, pca_w
from styleforge.directions.mixing import mixing_grid, style_mix
from styleforge.directions.render import seeds_to_ws, synthesize
from styleforge.directions.sefa import factorize, sefa, style_affines
from styleforge.directions.svm import learn_direction, sample_and_score, split_by_score
from styleforge.errors import StyleforgeError
from styleforge.images import uint8_as_generate
from styleforge.latents import seed_to_z

pytestmark = pytest.mark.usefixtures("one_thread")


def unit(v):
    v = np.asarray(v, dtype=np.float64)
    return v / np.linalg.norm(v)


def cos(a, b):
    return float(abs(unit(np.ravel(a)) @ unit(np.ravel(b))))


# ---------------------------------------------------------------------------------------------------------------------
# Direction files

def test_npy_files_people_share(tmp_path):
    rs = np.random.RandomState(0)
    v = rs.randn(512)
    np.save(tmp_path / "w.npy", v)                                   # [512]
    np.save(tmp_path / "boundary.npy", v[None].astype(np.float32))   # InterFaceGAN: [1, 512]
    np.save(tmp_path / "age.npy", np.repeat(v[None], 18, axis=0))    # encoder notebooks: [18, 512] float64
    np.save(tmp_path / "wp.npy", rs.randn(18, 512))
    for name in ("w", "boundary"):
        d = load_direction(tmp_path / f"{name}.npy")
        assert d.vector.shape == (512,) and not d.per_layer and d.name == name
        assert np.allclose(d.vector, v, atol=1e-6)
    age = load_direction(tmp_path / "age.npy")
    assert age.per_layer and age.vector.shape == (18, 512)
    # identical rows fit a network of any depth (a 256 px FFHQ has 14 layers); differing rows do not
    assert age.for_network(14, 512).shape == (14, 512)
    with pytest.raises(StyleforgeError, match="18 layers that differ, this network has 14"):
        load_direction(tmp_path / "wp.npy").for_network(14, 512)
    with pytest.raises(StyleforgeError, match="512 wide, this network's w_dim is 256"):
        age.for_network(18, 256)


def test_pickled_npy_is_refused_not_unpickled(tmp_path):
    np.save(tmp_path / "evil.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(StyleforgeError, match="not a readable direction file"):
        load_direction(tmp_path / "evil.npy")


def test_npz_round_trip_with_metadata_and_picks(tmp_path):
    rs = np.random.RandomState(1)
    dirs = [Direction(rs.randn(32), layers=(0, 1, 2), name=f"f{i}", origin="sefa", meta={"eigenvalue": 3.0 - i})
            for i in range(3)]
    p = save_directions(tmp_path / "f.npz", dirs, network="g.pkl")
    with np.load(p, allow_pickle=False) as z:  # plain arrays: readable without pickle
        meta = json.loads(str(z["meta"]))
        assert z["vectors"].shape == (3, 32) and meta["network"] == "g.pkl"
    back = load_directions(p)
    assert [d.name for d in back] == ["f0", "f1", "f2"]
    assert all(np.array_equal(a.vector, b.vector) and a.layers == b.layers and a.meta == b.meta
               for a, b in zip(dirs, back))
    assert load_direction(f"{p}:2").name == "f2" and load_direction(f"{p}:f1").name == "f1"
    with pytest.warns(UserWarning, match="holds 3 directions"):
        assert load_direction(p).name == "f0"
    with pytest.raises(StyleforgeError, match="no direction '7'"):
        load_direction(f"{p}:7")


def test_bad_directions():
    with pytest.raises(StyleforgeError, match="all zeros"):
        Direction(np.zeros(8))
    with pytest.raises(StyleforgeError, match="NaN"):
        Direction(np.array([1.0, np.nan]))


def test_parse_layers():
    assert parse_layers("all", 8) == tuple(range(8)) and parse_layers(None, 3) == (0, 1, 2)
    assert parse_layers("2-5", 14) == (2, 3, 4, 5) and parse_layers("0-1,6", 8) == (0, 1, 6)
    with pytest.raises(StyleforgeError, match="layer 8 is outside this network's layers 0-7"):
        parse_layers("6-13", 8)


# ---------------------------------------------------------------------------------------------------------------------
# apply, sweep, conditional editing

def test_apply_and_sweep_touch_only_the_chosen_layers():
    rs = np.random.RandomState(2)
    ws = rs.randn(3, 6, 32).astype(np.float32)
    d = Direction(rs.randn(32))
    out = apply(ws, d, 2.0, layers="1-2")
    assert np.array_equal(out[:, [0, 3, 4, 5]], ws[:, [0, 3, 4, 5]])
    assert np.allclose(out[:, 1:3] - ws[:, 1:3], 2.0 * d.vector, atol=1e-5)
    t = apply(torch.from_numpy(ws), d, 2.0, layers="1-2")  # torch in, torch out
    assert isinstance(t, torch.Tensor) and np.allclose(t.numpy(), out, atol=1e-6)
    sw = sweep(ws, d, [-1, 0, 1])
    assert sw.shape == (3, 3, 6, 32) and np.array_equal(sw[:, 1], ws)
    # a direction's own layers are its default; scale is the unit of strength (GANSpace: its std)
    d2 = Direction(d.vector, layers=(5,), scale=0.5)
    assert np.allclose(apply(ws, d2, 2.0)[:, 5] - ws[:, 5], d.vector, atol=1e-5)
    with pytest.raises(StyleforgeError, match="outside"):
        apply(ws, d, 1.0, layers="0-6")


@pytest.mark.parametrize("k", [1, 2, 3])
def test_conditional_editing_keeps_the_conditions_scores(k):
    """InterFaceGAN's project_boundary: closed form for 1 and 2 conditions, a solve for more; moving along the
    result leaves each condition's score as it was, and it stays as close to the primal as it can."""
    rs = np.random.RandomState(3 + k)
    D = 64
    primal = Direction(rs.randn(D), name="age")
    conds = [Direction(rs.randn(D) + 0.5 * primal.vector, name=f"c{i}") for i in range(k)]
    cd = condition(primal, conds)
    assert cd.origin == "conditional" and np.linalg.norm(cd.vector) == pytest.approx(1, abs=1e-6)
    ws = np.repeat(rs.randn(5, 1, D), 4, axis=1).astype(np.float32)
    edited = apply(ws, cd, 3.0)
    for c in conds:
        assert np.allclose(score(edited, c), score(ws, c), atol=1e-4)
    assert np.allclose(score(edited, primal) - score(ws, primal), 3.0 * (unit(primal.vector) @ cd.vector), atol=1e-4)
    # the same result as the general least-squares projection
    C = np.stack([unit(c.vector) for c in conds])
    p = unit(primal.vector)
    q = p - np.linalg.lstsq(C.T, p, rcond=None)[0] @ C
    assert cos(q, cd.vector) > 1 - 1e-6
    with pytest.raises(StyleforgeError, match="span of its conditions"):
        condition(primal, [primal])


# ---------------------------------------------------------------------------------------------------------------------
# SVM

def planted(n, D=512, noise=0.1, seed=0):
    """Latents on either side of a planted unit direction: mean +- direction plus per-dimension noise ``noise``,
    as [n, D] per side, the direction."""
    rs = np.random.RandomState(seed)
    n_true = unit(rs.randn(D))
    mu = rs.randn(D)
    pos = mu + n_true + noise * rs.randn(n, D)
    neg = mu - n_true + noise * rs.randn(n, D)
    return pos, neg, n_true


@pytest.mark.parametrize("n, bar", [(500, 0.95), (20, 0.7)])
def test_svm_recovers_a_planted_direction(n, bar):
    pytest.importorskip("sklearn")
    pos, neg, n_true = planted(n)
    r = learn_direction(pos[:, None].repeat(3, axis=1), neg[:, None].repeat(3, axis=1))  # W latents, 3 layers
    assert r.space == "w" and r.direction.vector.shape == (512,)
    c = float(r.direction.vector @ n_true)  # signed: points to the positives
    assert c > bar, c
    assert np.linalg.norm(r.direction.vector) == pytest.approx(1, abs=1e-5)
    n_val = round(n * 0.3)
    assert r.n_val == (n_val, n_val) and r.n_train == (n - n_val, n - n_val)
    assert r.val_accuracy == 1.0 and r.direction.meta["val_accuracy"] == 1.0
    print(f"{n} + {n}: cosine {c:.4f}, held-out accuracy {r.val_accuracy}")


def test_svm_on_w_plus_and_its_limits():
    pytest.importorskip("sklearn")
    pos, neg, n_true = planted(20, D=32, seed=1)
    rs = np.random.RandomState(0)
    pos_p = pos[:, None] + 0.01 * rs.randn(20, 4, 32)  # W+: layers differ
    neg_p = neg[:, None] + 0.01 * rs.randn(20, 4, 32)
    r = learn_direction(pos_p, neg_p)
    assert r.space == "w+" and r.direction.vector.shape == (4, 32)
    assert cos(r.direction.vector.sum(axis=0), n_true) > 0.9
    with pytest.raises(StyleforgeError, match="cannot train a W direction"):
        learn_direction(pos_p, neg_p, space="w")
    with pytest.raises(StyleforgeError, match="1 negative latent"):
        learn_direction(pos, neg[:1])
    with pytest.raises(StyleforgeError, match="different networks"):
        learn_direction(pos, neg[:, :16])


def test_scores_split_highest_and_lowest():
    ws = np.arange(100, dtype=np.float32)[:, None, None] * np.ones((1, 2, 4), np.float32)
    s = np.arange(100.0)
    pos, neg = split_by_score(ws, s, 10)
    assert sorted(pos[:, 0, 0]) == list(range(90, 100)) and sorted(neg[:, 0, 0]) == list(range(10))
    assert len(split_by_score(ws, s, 0.05)[0]) == 5
    assert len(split_by_score(ws, s)[0]) == 20  # 2 %, at least 20 a side (InterFaceGAN's 2 % alone gives 2)
    with pytest.raises(StyleforgeError, match="one score per latent"):
        split_by_score(ws, s[:5])
    with pytest.raises(StyleforgeError, match="3 scored latents give 1 a side"):
        split_by_score(ws[:3], s[:3])


def test_learned_direction_moves_the_image_monotonically():
    """A brightness direction learned from random samples scored by a function: stepping the strength up makes
    every edited image brighter, step by step, and further from the original."""
    pytest.importorskip("sklearn")
    G = tiny_generator()
    def brightness(im): return im.reshape(len(im), -1).mean(axis=1)
    ws, s = sample_and_score(G, 200, brightness, seed=1000)
    r = learn_direction(*split_by_score(ws, s, 40))
    assert r.val_accuracy >= 0.9
    strengths = np.linspace(-3, 3, 7)
    edited = sweep(seeds_to_ws(G, range(6)).numpy(), r.direction, strengths)
    imgs = np.stack([synthesize(G, e) for e in edited]).astype(np.float64)  # [seed, strength, H, W, C]
    b = imgs.reshape(6, 7, -1).mean(axis=2)
    assert (np.diff(b, axis=1) > 0).all(), b
    dist = np.abs(imgs - imgs[:, 3:4]).reshape(6, 7, -1).mean(axis=2)
    assert (np.diff(dist[:, 3:], axis=1) > 0).all() and (np.diff(dist[:, :4], axis=1) < 0).all()


# ---------------------------------------------------------------------------------------------------------------------
# SeFa

def test_sefa_layer_map_follows_the_ws_order():
    for arch in ("skip", "resnet"):
        G = tiny_generator(arch=arch)  # 16 px: blocks 4, 8, 16 -> num_ws 6
        names = {i: [n for n, _ in v] for i, v in style_affines(G).items()}
        assert names == {0: ["b4.conv1"], 1: ["b8.conv0"], 2: ["b8.conv1"], 3: ["b16.conv0"], 4: ["b16.conv1"],
                         5: ["b16.torgb"]}


def test_sefa_recovers_a_planted_dominant_direction():
    G = tiny_generator()
    rs = np.random.RandomState(4)
    v = unit(rs.randn(G.w_dim))
    chosen = (1, 2, 3)
    with torch.no_grad():
        for i in chosen:
            for _, affine in style_affines(G)[i]:
                a = torch.from_numpy(rs.randn(affine.weight.shape[0], 1) * 10)
                affine.weight.add_((a * torch.from_numpy(v)[None]).float())
    r = sefa(G, "1-3", top=4)
    assert r.layers == chosen and r.directions[0].layers == chosen
    assert cos(r.directions[0].vector, v) > 0.99
    assert (np.diff(r.eigenvalues) <= 1e-9).all() and np.isrealobj(r.eigenvalues)
    V = np.stack([d.vector for d in r.directions]).astype(np.float64)
    assert np.allclose(V @ V.T, np.eye(4), atol=1e-5)
    # other layers were not planted: their top factor is not v
    assert cos(sefa(G, "4-5", top=1).directions[0].vector, v) < 0.9
    # eigh of the normalised stack, the same factors as an SVD of it (genforce uses eig, unsorted)
    A = np.concatenate([a.weight.detach().double().numpy() for i in chosen for _, a in style_affines(G)[i]])
    A /= np.linalg.norm(A, axis=1, keepdims=True)
    s = np.linalg.svd(A, compute_uv=False)
    assert np.allclose(r.eigenvalues[: len(s)], s ** 2, rtol=1e-6)
    vals, vecs = factorize([torch.from_numpy(A)])
    assert np.allclose(vals, r.eigenvalues)


def test_sefa_bad_settings():
    G = tiny_generator()
    with pytest.raises(StyleforgeError, match="outside this network's layers 0-5"):
        sefa(G, "6-13")
    with pytest.raises(StyleforgeError, match="top"):
        sefa(G, "all", top=G.w_dim + 1)


# ---------------------------------------------------------------------------------------------------------------------
# GANSpace

class PlantedMapping(torch.nn.Module):
    """A stand-in generator whose W is z[1:] mixed by a fixed matrix (std ~1) plus a dominant axis ``v`` driven by
    z[0] alone (std 5), shifted away from the origin."""

    has_w_space = True

    def __init__(self, w_dim=16, num_ws=4, seed=0):
        super().__init__()
        rs = np.random.RandomState(seed)
        self.z_dim, self.w_dim, self.num_ws, self.c_dim = w_dim, w_dim, num_ws, 0
        self.v = unit(rs.randn(w_dim))
        mix = rs.randn(w_dim, w_dim) * 0.3
        mix[0] = 0
        self.mix = torch.nn.Parameter(torch.from_numpy(mix).float(), requires_grad=False)
        self.shift = torch.from_numpy(rs.randn(w_dim) * 3).float()
        self.mapping = self._map

    def _map(self, z, c, truncation_psi=1.0):
        z = z.float()
        w = z @ self.mix + 5 * z[:, :1] * torch.from_numpy(self.v).float() + self.shift
        return w[:, None].repeat(1, self.num_ws, 1)


def test_ganspace_first_component_recovers_a_planted_axis():
    G = PlantedMapping()
    r = pca_w(G, num_samples=20000, num_components=4, seed=3, batch_size=3000)
    assert cos(r.components[0], G.v) > 0.99
    assert 4.5 < r.stds[0] < 6.0 and (np.diff(r.stds) <= 0).all()
    # the streaming covariance is exact: the same as numpy's PCA of all samples at once
    gen = torch.Generator().manual_seed(3)
    W = G.mapping(torch.randn([20000, G.z_dim], generator=gen), None)[:, 0].double().numpy()
    vals, vecs = np.linalg.eigh(np.cov(W, rowvar=False))
    assert np.allclose(r.stds, np.sqrt(vals[::-1][:4]), rtol=1e-4)
    assert all(cos(a, b) > 1 - 1e-6 for a, b in zip(r.components, vecs[:, ::-1].T))
    assert np.allclose(r.mean, W.mean(axis=0), atol=1e-4)
    # chunking does not matter
    r2 = pca_w(G, num_samples=20000, num_components=4, seed=3, batch_size=777)
    assert np.allclose(r.stds, r2.stds, rtol=1e-6)
    dirs = ganspace_directions(r, "0-1", G.num_ws)
    assert dirs[0].layers == (0, 1) and dirs[0].scale == pytest.approx(float(r.stds[0]))


def test_streaming_covariance_keeps_precision_far_from_the_origin():
    rs = np.random.RandomState(5)
    x = rs.randn(5000, 3) * [1e-3, 1, 2] + 1e4
    cov = StreamingCovariance(3)
    for chunk in np.array_split(x, 7):
        cov.add(chunk)
    assert np.allclose(cov.covariance(), np.cov(x, rowvar=False), rtol=1e-6, atol=1e-12)


def test_ganspace_bad_settings():
    G = tiny_generator()
    with pytest.raises(StyleforgeError, match="components"):
        pca_w(G, 100, G.w_dim + 1)
    with pytest.raises(StyleforgeError, match="more samples than components"):
        pca_w(G, 10, 10)


# ---------------------------------------------------------------------------------------------------------------------
# Style mixing

def test_style_mixing_follows_the_official_semantics():
    G = tiny_generator()
    rows, cols, styles = [85, 100], [55, 821, 1789], (0, 1, 2)
    psi = 0.7
    images = style_mix(G, rows, cols, "0-2", truncation_psi=psi)
    assert set(images) == {(r, c) for r in rows for c in cols} | {(s, s) for s in rows + cols}

    def w_of(seed):  # mapped without truncation, truncated by hand, as style_mixing.py does
        with torch.no_grad():
            w = G.mapping(torch.from_numpy(seed_to_z(seed, G.z_dim)[None]), None)[0]
        return G.mapping.w_avg + (w - G.mapping.w_avg) * psi

    for r in rows:
        for c in cols:
            w = w_of(r).clone()
            w[list(styles)] = w_of(c)[list(styles)]
            with torch.no_grad():
                want = uint8_as_generate(G.synthesis(w[None]))[0]
            assert np.array_equal(images[(r, c)], want)
    grid = mixing_grid(images, rows, cols)
    h = G.img_resolution
    assert grid.shape == (3 * h, 4 * h, 3) and not grid[:h, :h].any()  # black corner
    assert np.array_equal(grid[:h, 2 * h: 3 * h], images[(821, 821)])     # column seeds across the top
    assert np.array_equal(grid[2 * h:, :h], images[(100, 100)])          # row seeds down the left
    assert np.array_equal(grid[h: 2 * h, 3 * h:], images[(85, 1789)])
    with pytest.raises(StyleforgeError, match="outside this network's layers 0-5"):
        style_mix(G, rows, cols, "0-6")
