"""styleforge.latents: z for a seed as the official scripts draw it, class labels, latent files, truncation."""

from __future__ import annotations

import types
import warnings

import numpy as np
import pytest
import torch

from styleforge.errors import StyleforgeError, StyleforgeWarning
from styleforge.latents import check_truncation, class_label, load_ws, seed_to_z


def test_seed_to_z_is_the_official_draw():
    z = seed_to_z(7, 512)
    assert z.shape == (512,) and z.dtype == np.float64
    assert np.array_equal(z, np.random.RandomState(7).randn(1, 512)[0])
    assert not np.array_equal(seed_to_z(8, 512), z)


def test_class_label():
    cond = types.SimpleNamespace(c_dim=4)
    c = class_label(cond, 2, "cpu")
    assert torch.equal(c, torch.tensor([[0.0, 0.0, 1.0, 0.0]]))
    with pytest.raises(StyleforgeError) as e:
        class_label(cond, None, "cpu")
    assert str(e.value) == "the network is conditional (4 classes): pass class 0..3" and e.value.param == "class_idx"
    with pytest.raises(StyleforgeError) as e:
        class_label(cond, 4, "cpu")
    assert str(e.value) == "class 4: out of range: the network has classes 0..3"
    uncond = types.SimpleNamespace(c_dim=0)
    assert class_label(uncond, None, "cpu") is None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert class_label(uncond, 1, "cpu") is None
    assert len(caught) == 1 and isinstance(caught[0].message, StyleforgeWarning)
    assert str(caught[0].message) == "the class is ignored: the network is unconditional"


def test_load_ws_reads_checks_and_broadcasts(tmp_path):
    w = np.random.RandomState(0).randn(3, 4, 8).astype(np.float32)
    np.savez(tmp_path / "w.npz", w=w)
    assert np.array_equal(load_ws(tmp_path / "w.npz", 4, 8), w)
    np.savez(tmp_path / "flat.npz", w=w[:, 0])  # [N, w_dim]: one w for every layer
    flat = load_ws(tmp_path / "flat.npz", 4, 8)
    assert flat.shape == (3, 4, 8) and np.array_equal(flat[:, 2], w[:, 0])
    np.savez(tmp_path / "nan.npz", w=np.where(np.arange(3)[:, None, None] == 1, np.nan, w))
    np.savez(tmp_path / "other.npz", z=w)
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    for name, needle in (("missing.npz", "no such latent file"), ("other.npz", "has no array 'w'"),
                         ("junk.npz", "not a readable .npz"), ("nan.npz", r"row\(s\) 1 of 'w' hold NaN")):
        with pytest.raises(StyleforgeError, match=needle):
            load_ws(tmp_path / name, 4, 8)
    with pytest.raises(StyleforgeError, match=r"shape \[3, 4, 8\], this network needs \[N, 6, 8\]"):
        load_ws(tmp_path / "w.npz", 6, 8)


def test_truncation_must_be_finite():
    assert check_truncation(0.7) == 0.7
    for bad in (float("nan"), float("inf")):
        with pytest.raises(StyleforgeError) as e:
            check_truncation(bad)
        assert e.value.param == "truncation_psi" and str(e.value).startswith("truncation psi ")
