"""The eager walk of TorchScript graphs (styleforge.perceptual.scripted) and its use for the VGG16 file."""

import warnings
from typing import Dict, List

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from styleforge.networks import ops
from styleforge.perceptual import scripted
from styleforge.perceptual import VGG16LPIPS, RandomConvFeatures
from styleforge.perceptual.scripted import EagerScript, UnsupportedGraph, eager_or_script


def _script(module: nn.Module) -> torch.jit.ScriptModule:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        m = torch.jit.script(module).eval()
    for p in m.parameters():
        p.requires_grad_(False)
    return m


class _Branchy(nn.Module):
    """Control flow, lists, a loop, string constants and an inlined F.interpolate, like the VGG16 file."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.c1 = nn.Conv2d(3, 128, 3, padding=1)  # 128 channels in c2: the Winograd-sized fast path
        self.c2 = nn.Conv2d(128, 16, 3, padding=1)
        self.c3 = nn.Conv2d(16, 8, 1)

    def forward(self, x: torch.Tensor, resize_images: bool = True, return_lpips: bool = False) -> torch.Tensor:
        if resize_images:
            x = F.interpolate(x, size=(16, 16), mode="area")
        h = F.relu(self.c1(x * (1 / 255.0)))
        feats: List[torch.Tensor] = [h]
        for _ in range(2):
            h = F.relu(self.c2(h)) if h.shape[1] == 128 else F.leaky_relu(self.c3(h), 0.2)
            feats.append(h)
        if return_lpips:
            out = [f / (f.square().sum(dim=1, keepdim=True).sqrt() + 1e-10) for f in feats]
            return torch.cat([o.flatten(1) / float(o.shape[2] * o.shape[3]) ** 0.5 for o in out], dim=1)
        return h.mean(dim=[2, 3]).to(torch.float64)


class _DictInOneBranch(nn.Module):
    def __init__(self):
        super().__init__()
        self.c = nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, x: torch.Tensor, resize_images: bool = True, return_lpips: bool = False) -> torch.Tensor:
        y = self.c(x)
        if return_lpips:
            return y.flatten(1)
        d: Dict[str, torch.Tensor] = {"y": y}  # prim::DictConstruct: not walked
        return d["y"].sum(dim=[2, 3])


@pytest.mark.parametrize("resize", [True, False])
@pytest.mark.parametrize("lpips", [True, False])
def test_eager_walk_matches_torchscript(resize, lpips):
    m = _script(_Branchy())
    eager = EagerScript(m)
    x = torch.rand(2, 3, 16, 16) * 255
    ref = m(x, resize_images=resize, return_lpips=lpips)
    got = eager(x, resize_images=resize, return_lpips=lpips)
    assert got.dtype == ref.dtype and got.shape == ref.shape
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-6)
    # defaults and positional arguments bind as in the script
    torch.testing.assert_close(eager(x), m(x), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(eager(x, False, True), m(x, False, True), rtol=1e-5, atol=1e-6)
    with pytest.raises(TypeError):
        eager(x, bogus=1)


def test_eager_walk_gradients_and_fast_conv(monkeypatch):
    m = _script(_Branchy())
    eager = EagerScript(m)
    calls = []
    real = ops.conv2d_resample
    monkeypatch.setattr(scripted.ops, "conv2d_resample", lambda *a, **k: calls.append(a[0].shape) or real(*a, **k))
    x = torch.rand(1, 3, 16, 16) * 255
    grads = []
    for net in (m, eager):
        xx = x.clone().requires_grad_(True)
        net(xx, resize_images=False, return_lpips=True).square().sum().backward()
        grads.append(xx.grad)
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-4, atol=1e-7)
    assert len(calls) == 2  # c1 and c2 (3x3, pad 1, frozen); the 1x1 c3 is never reached with 16 channels
    # the Winograd kernel transform is computed once per conv and reused on the next call
    assert len(eager._layouts) == 2
    before = [dict(lay._store) for lay in eager._layouts.values()]
    eager(x, resize_images=False, return_lpips=True)
    after = [lay._store for lay in eager._layouts.values()]
    assert all(b[k] is a[k] for b, a in zip(before, after) for k in b)


def test_weights_with_gradients_take_the_graphs_own_conv(monkeypatch):
    m = _script(_Branchy())
    for p in m.parameters():
        p.requires_grad_(True)
    calls = []
    monkeypatch.setattr(scripted.ops, "conv2d_resample", lambda *a, **k: calls.append(1))
    x = torch.rand(1, 3, 16, 16) * 255
    torch.testing.assert_close(EagerScript(m)(x, False, True), m(x, False, True), rtol=1e-5, atol=1e-6)
    assert calls == []


def test_traced_module():
    class T(nn.Module):
        def __init__(self):
            super().__init__()
            self.c = nn.Conv2d(3, 4, 3, padding=1)

        def forward(self, x):
            return torch.relu(self.c(x)).to(torch.float64).sum(dim=[2, 3])

    x = torch.rand(2, 3, 8, 8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t = torch.jit.trace(T(), x)
    torch.testing.assert_close(EagerScript(t)(x), t(x))


def test_probe_picks_eager_or_falls_back(monkeypatch):
    x = torch.rand(1, 3, 16, 16) * 255
    call = lambda mod, t: mod(t, resize_images=False, return_lpips=True)  # noqa: E731
    w = eager_or_script(_script(_Branchy()), x, call)
    assert w.uses_eager and w.reason is None
    # an eager result that differs from the script's is not used
    real = ops.conv2d_resample
    monkeypatch.setattr(scripted.ops, "conv2d_resample", lambda *a, **k: real(*a, **k) * 1.001)
    w = eager_or_script(_script(_Branchy()), x, call)
    assert not w.uses_eager and "differs" in w.reason
    torch.testing.assert_close(w(x, False, True), _script(_Branchy())(x, False, True))
    monkeypatch.undo()
    # a graph the walker cannot run on the probe's path
    w = eager_or_script(_script(_DictInOneBranch()), x, lambda mod, t: mod(t, False, False))
    assert not w.uses_eager and "DictConstruct" in w.reason


def test_runtime_fallback_on_an_unwalked_branch():
    m = _script(_DictInOneBranch())
    x = torch.rand(1, 3, 8, 8)
    w = eager_or_script(m, x, lambda mod, t: mod(t, False, True))
    assert w.uses_eager
    with pytest.warns(RuntimeWarning, match="DictConstruct"):
        out = w(x, False, False)
    torch.testing.assert_close(out, m(x, False, False))
    assert not w.uses_eager and "DictConstruct" in w.reason
    with pytest.raises(UnsupportedGraph):
        EagerScript(m)(x, False, False)


def test_vgg16_file_runs_eager_with_the_same_features(tmp_path):
    ref = RandomConvFeatures((64, "M", 128, 128, "M", 256), seed=3)
    path = ref.save_torchscript(tmp_path / "vgg16.pt")
    x = torch.rand(2, 3, 32, 32) * 255
    fast = VGG16LPIPS(path)
    slow = VGG16LPIPS(path, eager=False)
    assert fast.runs_eager and "eager" in fast.describe()
    assert not slow.runs_eager and "TorchScript" in slow.describe()
    want = ref(x)
    torch.testing.assert_close(slow(x), want, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(fast(x), want, rtol=1e-4, atol=1e-6)
    # the file's own resize path (224 px area resize) walks too
    a = fast.net(x, resize_images=True, return_lpips=False)
    b = slow.net(x, resize_images=True, return_lpips=False)
    assert a.shape == b.shape and (a - b).abs().max() <= 1e-5 * b.abs().max()  # float rounding of the sums
    assert not any(p.requires_grad for p in fast.parameters())


def test_vgg16_eager_walk_can_be_switched_off_by_environment(tmp_path, monkeypatch):
    path = RandomConvFeatures((8, "M", 16)).save_torchscript(tmp_path / "vgg16.pt")
    monkeypatch.setenv("STYLEFORGE_VGG_EAGER", "0")
    assert not VGG16LPIPS(path).runs_eager
    assert VGG16LPIPS(path, eager=True).runs_eager
    monkeypatch.setenv("STYLEFORGE_VGG_EAGER", "1")
    assert VGG16LPIPS(path).runs_eager


class _DtypeAndShapes(nn.Module):
    """dtype comparisons, a one-element unpack and integer tensors made from sizes."""

    def forward(self, x: torch.Tensor, resize_images: bool = True, return_lpips: bool = False) -> torch.Tensor:
        (a,) = x.chunk(1)  # prim::ListUnpack with a single output
        if x.dtype == torch.float32:
            a = a.to(torch.float64)
        n = torch.arange(x.size(0))  # integer tensor from a size
        return a.flatten(1).sum(dim=1) + n


def test_dtype_semantics_match_torchscript():
    m = _script(_DtypeAndShapes())
    x = torch.rand(3, 2, 4, 4)
    ref, got = m(x), EagerScript(m)(x)
    assert got.dtype == ref.dtype == torch.float64
    torch.testing.assert_close(got, ref)
    assert eager_or_script(m, x).uses_eager


def test_probe_rejects_a_dtype_mismatch_and_any_walk_error(monkeypatch):
    m = _script(_DtypeAndShapes())
    x = torch.rand(3, 2, 4, 4)
    real = EagerScript._call

    def float32_results(self, node, kind, ins):
        out = real(self, node, kind, ins)
        return out.float() if torch.is_tensor(out) and out.dtype == torch.float64 else out

    monkeypatch.setattr(EagerScript, "_call", float32_results)
    w = eager_or_script(m, x)
    assert not w.uses_eager and "differs" in w.reason

    def broken(self, node, kind, ins):
        raise IndexError("a bug in the walker")

    monkeypatch.setattr(EagerScript, "_call", broken)
    w = eager_or_script(m, x)
    assert not w.uses_eager and "IndexError" in w.reason
    torch.testing.assert_close(w(x), m(x))
