"""The training step against the official code's own numbers (fixtures ``train_step_*``, see their README).

Each phase (Gmain, Greg, Dmain, Dreg) runs from the pickle's G and D (fp32) through OUR training loop: a
:class:`~styleforge.train.trainer.Trainer` built from the fixture's settings (its optimisers with the lazy-regularisation
lr/betas, its phases and intervals, its loss) runs ``_run_phase`` with the fixture's inputs and torch seed; the
gradients are read just before the optimiser step. Bars (the fixtures' README): losses within 1e-5 relative, every
gradient tensor within 1e-4 (||ours - official|| / ||official||), Adam updates of one Gmain+Dmain step within 5e-3.

Fixture folders: ``$STYLEFORGE_TRAIN_STEP_FIXTURES`` (folders separated by os.pathsep), else
``../shared/fixtures/official/train_step_cifar_cond_r32``; the network pickle named by a folder's manifest is looked
up in the folder and next to it. Skipped when absent.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import OFFICIAL
from styleforge.networks.checkpoint import load_networks
from styleforge.networks.config import network_spec
from styleforge.train.trainer import Trainer
from styleforge.train.presets import TrainingOptions

LOSS_TOL, GRAD_TOL, UPDATE_TOL = 1e-5, 1e-4, 5e-3
PHASES = ("Gmain", "Greg", "Dmain", "Dreg")


def _folders():
    env = os.environ.get("STYLEFORGE_TRAIN_STEP_FIXTURES")
    if env:
        return [Path(p) for p in env.split(os.pathsep) if p]
    return [OFFICIAL / "train_step_cifar_cond_r32"]


@pytest.fixture(autouse=True)
def _no_onednn(one_thread):
    """oneDNN's convolutions (on by default on CPU) round differently; in these batches one leaky-ReLU input inside
    D sits ~1e-7 from zero and that rounding can move it across zero, changing some Gmain gradients by ~1e-3
    (measured: 14 of 58 tensors, up to 1.1e-3). With oneDNN off every phase agrees to ~1e-6 (the fixtures' README).
    (One thread, as the fixtures were made: these small networks run fastest so.)"""
    enabled = torch.backends.mkldnn.enabled
    torch.backends.mkldnn.enabled = False
    yield
    torch.backends.mkldnn.enabled = enabled


@pytest.fixture(scope="module", params=_folders(), ids=lambda p: p.name)
def fx(request):
    folder = request.param
    if not (folder / "manifest.json").is_file():
        pytest.skip(f"training-step fixture {folder} not present")
    manifest = json.loads((folder / "manifest.json").read_text())
    name = Path(manifest["network_pickle"]).name
    pkl = next((p for p in (folder / name, folder.parent / name) if p.is_file()), None)
    if pkl is None:
        pytest.skip(f"{name} (named by {folder / 'manifest.json'}) not found in {folder} or next to it")
    bundle = load_networks(pkl)
    inputs = {k: torch.from_numpy(v) for k, v in np.load(folder / "inputs.npz").items()}
    return folder, manifest, bundle, inputs


class _Labels:
    """The dataset the Trainer reads labels from (the phases here get their inputs directly)."""

    def __init__(self, c):
        self.c = c.numpy()

    def __len__(self):
        return len(self.c)

    def get_label(self, i):
        return self.c[i]


def _trainer(fx, batch_gpu=None) -> Trainer:
    """Our Trainer with the fixture's settings and the pickle's G and D (fp32) as weights."""
    _, m, bundle, inputs = fx
    G = network_spec(bundle.networks["G"])["config"]
    D = network_spec(bundle.networks["D"])["config"]
    G["synthesis"]["num_fp16_res"] = m["G_init_kwargs_used"]["synthesis_kwargs"]["num_fp16_res"]
    D["num_fp16_res"] = m["D_init_kwargs_used"]["num_fp16_res"]
    lk = m["loss_kwargs"]
    assert lk["augment_pipe"] is None
    opts = TrainingOptions(
        batch=m["batch"], batch_gpu=batch_gpu or m["batch"], G=G, D=D, cond=m["c_dim"] > 0, label_dim=m["c_dim"],
        resolution=m["img_shape"][1], num_channels=m["img_shape"][0], num_images=m["batch"], aug="noaug",
        gamma=lk["r1_gamma"], style_mixing_prob=lk["style_mixing_prob"], pl_weight=lk["pl_weight"],
        pl_batch_shrink=lk["pl_batch_shrink"], pl_decay=lk["pl_decay"],
        G_reg_interval=m["G_reg_interval"], D_reg_interval=m["D_reg_interval"], device="cpu")
    tr = Trainer(opts, dataset=_Labels(inputs["gen_c"]))
    with torch.no_grad():
        for k in ("G", "D"):
            getattr(tr, k).load_state_dict(bundle.networks[k].state_dict())
    tr.loss.pl_mean.fill_(m["pl_mean_at_start"])
    return tr


def _run(tr: Trainer, name: str, inputs, seed: int):
    """One phase through the loop's own ``_run_phase``: returns ({param: grad before the optimiser step}, the stats
    of each accumulation round). The optimiser step itself is skipped."""
    phase = next(p for p in tr.phases if p.name == name)
    grads, stats = {}, []
    loss_fn = tr.loss.accumulate_gradients

    def accumulate(*args, **kw):
        stats.append(loss_fn(*args, **kw))
        return stats[-1]

    def capture():
        grads.update({n: p.grad.detach().clone() for n, p in phase.module.named_parameters() if p.grad is not None})

    tr.loss.accumulate_gradients = accumulate
    step = phase.opt.step
    phase.opt.step = capture
    try:
        torch.manual_seed(seed)
        tr._run_phase(phase, inputs["real_img"], inputs["real_c"], inputs["gen_z"], inputs["gen_c"])
    finally:
        phase.opt.step = step
        tr.loss.accumulate_gradients = loss_fn
    return grads, stats


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    nb = float(b.double().norm())
    return float((a.double() - b.double()).norm()) / nb if nb > 0 else float(a.double().norm())


def _check_loss(ours: float, official, what: str) -> None:
    official = float(official)
    assert abs(ours - official) <= LOSS_TOL * abs(official), (what, ours, official)


@pytest.mark.parametrize("name", PHASES)
def test_phase_matches_official(fx, name, monkeypatch):
    folder, m, _, inputs = fx
    ph = m["phases"][name]
    ref = np.load(folder / ph["file"])
    tr = _trainer(fx)
    phase = next(p for p in tr.phases if p.name == name)
    assert phase.interval == ph["gain"]  # the loop's gain for this phase is the official one

    # Record every random draw made during the phase: the same calls, shapes and values as the official code.
    drawn = []
    for fn in ("randn", "randn_like", "rand", "rand_like", "randint"):
        orig = getattr(torch, fn)
        monkeypatch.setattr(torch, fn, lambda *a, _orig=orig, **k: drawn.append(_orig(*a, **k)) or drawn[-1])
    grads, stats = _run(tr, name, inputs, ph["seed"])
    monkeypatch.undo()
    official_draws = [ref[d["key"]] for d in ph["rng_draws"]]
    assert len(drawn) == len(official_draws)
    for ours, theirs in zip(drawn, official_draws):
        assert ours.shape == theirs.shape and torch.equal(ours, torch.from_numpy(theirs))

    # gradients: every parameter of the phase's network, under the official names
    net = ph["trainable_module"]
    prefix = f"grad__{net}__"
    assert set(grads) == {k[len(prefix):] for k in ref.files if k.startswith(prefix)}
    errs = {n: _rel(g, torch.from_numpy(ref[prefix + n])) for n, g in grads.items()}
    worst = max(errs, key=errs.get)
    assert errs[worst] <= GRAD_TOL, (worst, errs[worst])

    # losses (means over the batch, before the gain) and state
    (st,) = stats
    gain = phase.interval
    if name == "Gmain":
        _check_loss(float(st["Loss/G/loss"].mean()), ref["loss__Gmain"], "Gmain")
        _check_loss(float(st["Loss/G/loss"].mean()) * gain, ref["loss__Gmain_backward_value"], "Gmain backward")
    elif name == "Greg":
        _check_loss(float(st["Loss/pl_penalty"].mean()), ref["loss__pl_penalty"], "pl_penalty")
        _check_loss(float(st["Loss/G/reg"].mean()), ref["loss__Gpl"], "Gpl")
        _check_loss(float(st["Loss/G/reg"].mean()) * gain, ref["loss__Gpl_backward_value"], "Gpl backward")
        _check_loss(float(tr.loss.pl_mean), ref["loss__pl_mean_after"], "pl_mean after (EMA)")
    elif name == "Dmain":
        _check_loss(float(F.softplus(st["Loss/scores/fake"]).mean()), ref["loss__Dgen"], "Dgen")
        _check_loss(float(F.softplus(-st["Loss/scores/real"]).mean()), ref["loss__Dreal"], "Dreal")
        _check_loss(float(st["Loss/D/loss"].mean()), ref["loss__Dgen"] + ref["loss__Dreal"], "D loss")
    else:
        _check_loss(float(st["Loss/r1_penalty"].mean()), ref["loss__r1_penalty"], "r1_penalty")
        _check_loss(float(st["Loss/D/reg"].mean()), ref["loss__Dr1"], "Dr1")
        _check_loss(float(st["Loss/D/reg"].mean()) * gain, ref["loss__Dr1_backward_value"], "Dr1 backward")
    if "buffer_after__G__mapping.w_avg" in ref.files:  # train mode: the mapping's EMA of w moved
        w_avg = torch.from_numpy(ref["buffer_after__G__mapping.w_avg"])
        assert _rel(tr.G.mapping.w_avg, w_avg) <= GRAD_TOL


def test_adam_step_matches_official(fx):
    """Gmain then Dmain (Dmain sees the updated G), each followed by the loop's Adam step, from fresh optimisers."""
    folder, m, _, inputs = fx
    st = m["step"]
    ref = np.load(folder / st["file"])
    tr = _trainer(fx)
    for net in ("G", "D"):  # lazy regularisation: lr * r and beta2 ** r with r = interval / (interval + 1)
        want = st["optimizers"][net]
        group = tr.opt[net].param_groups[0]
        assert group["lr"] == pytest.approx(want["lr"], rel=1e-12)
        assert group["betas"] == pytest.approx(tuple(want["betas"]), rel=1e-12)
        assert group["eps"] == want["eps"]
    before = {(k, n): p.detach().clone() for k in ("G", "D") for n, p in getattr(tr, k).named_parameters()}
    losses = {}
    for name in ("Gmain", "Dmain"):
        phase = next(p for p in tr.phases if p.name == name)
        torch.manual_seed(st["seeds"][name])
        loss_fn = tr.loss.accumulate_gradients
        tr.loss.accumulate_gradients = lambda *a, **k: losses.setdefault(name, loss_fn(*a, **k))
        try:
            tr._run_phase(phase, inputs["real_img"], inputs["real_c"], inputs["gen_z"], inputs["gen_c"])
        finally:
            tr.loss.accumulate_gradients = loss_fn
    _check_loss(float(losses["Gmain"]["Loss/G/loss"].mean()), ref["loss__step_Gmain"], "step Gmain")
    _check_loss(float(F.softplus(losses["Dmain"]["Loss/scores/fake"]).mean()), ref["loss__step_Dgen"], "step Dgen")
    _check_loss(float(F.softplus(-losses["Dmain"]["Loss/scores/real"]).mean()), ref["loss__step_Dreal"], "step Dreal")
    errs = {}
    for (k, n), b in before.items():
        update = getattr(tr, k).get_parameter(n).detach() - b
        errs[(k, n)] = _rel(update, torch.from_numpy(ref[f"update__{k}__{n}"]))
    assert len(errs) == len([f for f in ref.files if f.startswith("update__")])
    worst = max(errs, key=errs.get)
    assert errs[worst] <= UPDATE_TOL, (worst, errs[worst])


@pytest.mark.parametrize("name", ["Gmain", "Dreg"])
def test_accumulation_rounds_add_up_with_the_phase_gain(fx, name):
    """The batch split into rounds (batch_gpu < batch): as the official loop, every round is back-propagated with
    gain = the phase interval and the rounds' gradients add up (not averaged)."""
    folder, m, _, inputs = fx
    seed = m["phases"][name]["seed"]
    half = m["batch"] // 2
    grads, _ = _run(_trainer(fx, batch_gpu=half), name, inputs, seed)

    tr = _trainer(fx, batch_gpu=half)  # the official accumulation, written out
    phase = next(p for p in tr.phases if p.name == name)
    phase.module.requires_grad_(True)
    torch.manual_seed(seed)
    for sl in (slice(0, half), slice(half, None)):
        tr.loss.accumulate_gradients(name, inputs["real_img"][sl], inputs["real_c"][sl], inputs["gen_z"][sl],
                                     inputs["gen_c"][sl], gain=phase.interval)
    for n, p in phase.module.named_parameters():
        assert torch.allclose(grads[n], p.grad, rtol=1e-6, atol=1e-12), n
