"""The StyleGAN2 training loss (styleforge.train.loss): its terms, style mixing, augmentation of what D sees."""

from __future__ import annotations

import numpy as np
import torch

from train_data import tiny_pair

def _grads(module):
    return {n: p.grad.clone() for n, p in module.named_parameters() if p.grad is not None}


def test_loss_terms_finite_and_regularisers_change_gradients():
    from styleforge.train.loss import StyleGAN2Loss

    G, D = tiny_pair(c_dim=3)
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

    G, D = tiny_pair()
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

    G, D = tiny_pair()
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
