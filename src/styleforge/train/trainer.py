"""The trainer: one run's networks, optimisers, augmentation and loss, stepped, snapshotted and resumed exactly.

The networks and the loss come from the run's model by name (:mod:`.registry`; ``opts.model``, StyleGAN2 by
default); everything else is the same for every model. Reproducibility design (what makes a resumed run
bit-identical to an uninterrupted one on CPU in deterministic mode):

* Data order is stateless: sample number ``i`` of the run is ``perm(seed, epoch)[i % N]`` with ``epoch = i // N``
  and ``perm`` a seeded permutation; step ``s`` of process ``r`` reads samples ``s*batch + r*batch/world ...``
  (:class:`SampleOrder`). Only the step counter is needed to continue the stream.
* Random draws are re-seeded every step: latents and generated labels from ``(seed, step)`` (the same global batch
  on every process, each taking its slice), everything else (noise inputs, style mixing, augmentation,
  path-length noise) from ``(seed, step, rank)`` through the global torch RNG.
* Everything else that evolves is in the state file: weights (G, D, G_ema, their buffers such as ``w_avg``), both
  Adam states, the loss's state (``pl_mean``), the ADA controller (p and its partial interval) and the progress
  counters. The RNG states are saved too (and restored) for completeness, though the re-seeding makes them
  redundant.

With several processes (:mod:`.distributed`) the gradients of each phase are averaged with one all-reduce, and the
model's shared buffers, the ADA statistics and the stop flag with one more per step.
"""

from __future__ import annotations

import copy
import json
import math
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import numpy as np
import torch

from ..errors import StyleforgeError, StyleforgeWarning
from ..utils.fileio import atomic_path, save_image
from ..utils.progress import Callback
from .distributed import DistInfo
from .presets import TrainingOptions
from .registry import get_model
from .rundir import (
    RunLog, TensorBoard, append_stats, grid_indices, grid_uint8, peak_memory_gb, tick_line, write_fakes_gif,
)
from .state import STATE_FORMAT, STATE_NAME, STATE_VERSION, StopFlag, derive_seed, rng_state, set_rng_state

NETWORKS = ("G", "D", "G_ema")


class SampleOrder(torch.utils.data.Sampler):
    """Endless batches of dataset indices for one process, starting at step ``start_step`` (see module docstring)."""

    def __init__(self, num_items: int, seed: int, batch: int, rank: int = 0, world: int = 1, start_step: int = 0):
        self.n = int(num_items)
        self.seed = int(seed)
        self.batch = int(batch)
        self.rank = rank
        self.world = world
        self.start_step = int(start_step)
        self._cache: Dict[int, np.ndarray] = {}

    def permutation(self, epoch: int) -> np.ndarray:
        if epoch not in self._cache:
            if len(self._cache) > 2:
                self._cache.clear()
            rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([self.seed, epoch, 0x0DA7A])))
            self._cache[epoch] = rng.permutation(self.n)
        return self._cache[epoch]

    def indices(self, step: int) -> List[int]:
        per = self.batch // self.world
        first = step * self.batch + self.rank * per
        out = []
        for pos in range(first, first + per):
            epoch, k = divmod(pos, self.n)
            out.append(int(self.permutation(epoch)[k]))
        return out

    def __iter__(self):
        step = self.start_step
        while True:
            yield self.indices(step)
            step += 1


def _loader_worker_init(_worker_id: int) -> None:
    """Data-loader workers leave SIGTERM/SIGINT to the main process. A scheduler's preemption signal (SLURM
    signals the whole job) or Ctrl-C (the whole foreground group) reaches the workers too; if they died of it,
    the main process would fail with "DataLoader worker killed" instead of saving its state and exiting 0."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@dataclass
class Phase:
    name: str
    module: torch.nn.Module
    opt: torch.optim.Optimizer
    interval: int


class Trainer:
    """Networks, optimisers, augmentation and loss of one run, with ``step()``, ``run()`` and state save/load.

    ``run_dir`` None: nothing is written (benchmarks, tests of single steps). Log lines (also written to the run
    folder's ``log.txt``) reach ``callback`` as notes, on rank 0.
    """

    def __init__(self, opts: TrainingOptions, dist: Optional[DistInfo] = None, run_dir: Optional[Path] = None,
                 callback: Optional[Callback] = None, dataset=None,
                 step_callback: Optional[Callable[["Trainer"], None]] = None,
                 snapshot_callback: Optional[Callable[["Trainer", Path], None]] = None):
        from ..data.dataset import open_dataset
        from .augment import make_augment

        self.opts = opts
        self.dist = dist or DistInfo()
        self.device = self.dist.device
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.writes = self.run_dir is not None and self.dist.is_main
        self.log = RunLog(self.dist.is_main, callback, self.run_dir / "log.txt" if self.writes else None)
        self.stop = StopFlag()
        self.step_callback = step_callback
        self.snapshot_callback = snapshot_callback
        if opts.batch % (opts.batch_gpu * self.dist.world):
            raise StyleforgeError(f"batch {opts.batch} is not divisible by {self.dist.world} process(es) x {opts.batch_gpu}")

        self.dataset = dataset if dataset is not None else open_dataset(opts.data, cond=opts.cond, mirror=opts.mirror)
        labels = [self.dataset.get_label(i) for i in range(len(self.dataset))] if opts.cond else []
        self.labels = (torch.from_numpy(np.stack(labels)).float() if opts.cond
                       else torch.zeros([len(self.dataset), 0]))

        self.model = get_model(opts.model)
        torch.manual_seed(opts.seed)
        nets = self.model.build_networks(opts)
        self.G = nets["G"].train().requires_grad_(False).to(self.device)
        self.D = nets["D"].train().requires_grad_(False).to(self.device)
        self.G_ema = copy.deepcopy(self.G).eval()
        self.augment_pipe, self.ada = (None, None)
        if opts.aug != "noaug":
            self.augment_pipe, self.ada = make_augment(opts.aug, opts.augpipe, p=opts.p, target=opts.target,
                                                       interval=opts.ada_interval, ada_kimg=opts.ada_kimg)
            self.augment_pipe = self.augment_pipe.train().requires_grad_(False).to(self.device)
        self.loss = self.model.build_loss(self.G, self.D, self.augment_pipe, opts,
                                          self.dist.reduce_mean if self.dist.world > 1 else None)

        self.phases: List[Phase] = []
        self.opt: Dict[str, torch.optim.Optimizer] = {}
        main_intervals = self.model.intervals(opts)
        for name, module, reg_interval in [("G", self.G, opts.G_reg_interval), ("D", self.D, opts.D_reg_interval)]:
            if self.model.optimizer is not None:
                opt = self.model.optimizer(name, module, opts)
            else:
                mb_ratio = reg_interval / (reg_interval + 1)  # lazy regularisation: compensate lr and betas
                opt = torch.optim.Adam(module.parameters(), lr=opts.lrate * mb_ratio,
                                       betas=tuple(b**mb_ratio for b in opts.betas), eps=opts.eps)
            self.opt[name] = opt
            self.phases.append(Phase(name + "main", module, opt, int(main_intervals.get(name + "main", 1))))
            # an inactive regulariser (weight 0) takes no optimiser step at all
            self.phases.append(Phase(name + "reg", module, opt, reg_interval if self.loss.regularizes(name) else 0))

        self.cur_nimg = 0
        self.cur_tick = 0
        self.batch_idx = 0
        self.tick_start_nimg = 0
        self.total_time = 0.0  # seconds of training before this process started (resumed runs)
        self.resumed = False
        self.stop_now = False
        self.tick_stats: Dict[str, List[float]] = {}
        self.last_stats: Dict[str, float] = {}
        self.phase_time: Dict[str, float] = {}
        self._data_iter = None
        self._grid = None
        self.tensorboard = TensorBoard(self.run_dir) if self.writes else None

    def networks(self) -> Dict[str, torch.nn.Module]:
        return {"G": self.G, "D": self.D, "G_ema": self.G_ema}

    # -- distributed helpers -----------------------------------------------------------------------------------------

    def broadcast_weights(self) -> None:
        """Make every process start from rank 0's weights (cheap insurance on top of identical seeding)."""
        if self.dist.world == 1:
            return
        with torch.no_grad():
            for module in self.networks().values():
                for t in list(module.parameters()) + list(module.buffers()):
                    torch.distributed.broadcast(t, src=0)
                    # the collective writes the memory without bumping the tensor's version counter: bump it,
                    # so that kernels cached from the old values (networks.ops.WeightLayouts) are re-derived
                    torch.autograd.graph.increment_version(t)

    # -- one step ----------------------------------------------------------------------------------------------------

    def _next_reals(self):
        if self._data_iter is None:
            sampler = SampleOrder(len(self.dataset), self.opts.seed, self.opts.batch, self.dist.rank,
                                  self.dist.world, start_step=self.batch_idx)
            workers = 0 if self.opts.deterministic else max(int(self.opts.workers), 0)
            loader = torch.utils.data.DataLoader(
                self.dataset, batch_sampler=sampler, num_workers=workers, pin_memory=self.device.type == "cuda",
                prefetch_factor=2 if workers > 0 else None, generator=torch.Generator().manual_seed(0),
                worker_init_fn=_loader_worker_init if workers > 0 else None)
            self._data_iter = iter(loader)
        img, c = next(self._data_iter)
        img = img.to(self.device, non_blocking=True).to(torch.float32) / 127.5 - 1
        return img, c.to(self.device, non_blocking=True).float()

    def close_data(self) -> None:
        """Stop the data-loader workers now (the next step starts new ones where the data order has got to).

        Never left to garbage collection: the workers ignore SIGTERM (see :func:`_loader_worker_init`), so a
        loader still alive when Python exits makes multiprocessing's exit handler wait for them forever."""
        it, self._data_iter = self._data_iter, None
        if hasattr(it, "_shutdown_workers"):  # a multi-process iterator: what its __del__ would call
            it._shutdown_workers()  # tells the workers to exit and joins them (SIGTERM after 5 s: ignored)
            for w in it._workers:
                if w.is_alive():  # stuck for 10 s: nothing else would ever end it
                    w.kill()
                    w.join()

    def _draw_latents(self):
        """(z, c) for every phase: [phases, batch_per_process, ...], the same global draw on every process."""
        opts = self.opts
        per = opts.batch // self.dist.world
        sl = slice(self.dist.rank * per, (self.dist.rank + 1) * per)
        g = torch.Generator().manual_seed(derive_seed(opts.seed, 1, self.batch_idx))
        z = torch.randn([len(self.phases), opts.batch, self.G.z_dim], generator=g)[:, sl]
        if opts.cond:
            idx = torch.randint(len(self.labels), [len(self.phases), opts.batch], generator=g)[:, sl]
            c = self.labels[idx]
        else:
            c = torch.zeros([len(self.phases), per, 0])
        return z.to(self.device), c.to(self.device)

    def _record(self, stats: Dict[str, torch.Tensor]) -> None:
        for k, v in stats.items():
            v = v.detach().float().flatten()
            acc = self.tick_stats.setdefault(k, [0.0, 0.0, 0.0])
            acc[0] += v.numel()
            acc[1] += float(v.sum())
            acc[2] += float(v.double().square().sum())
            self.last_stats[k] = float(v.mean()) if v.numel() else float("nan")

    def _run_phase(self, phase: Phase, real_img, real_c, z, c) -> torch.Tensor:
        """Gradients of one phase over this process's share of the batch, averaged over processes, then
        the optimiser step. Returns (sum of sign(D(real)), count) for ADA."""
        opts = self.opts
        t0 = time.perf_counter()
        phase.module.requires_grad_(True)
        phase.opt.zero_grad(set_to_none=True)
        rounds = opts.batch // (opts.batch_gpu * self.dist.world)
        signs = torch.zeros([2], dtype=torch.float64)
        for r in range(rounds):
            sl = slice(r * opts.batch_gpu, (r + 1) * opts.batch_gpu)
            # As the official loop: gain = interval on every round and the rounds' gradients add up (R rounds give R
            # times one big batch's mean). Adam cancels that scale except against eps: dividing by R instead moved
            # one Gmain+Greg+Dmain+Dreg step of cifar_cond_r32 (2 rounds) by up to 9 % per tensor (median 0.3 %).
            stats = self.loss.accumulate_gradients(
                phase.name, real_img[sl], real_c[sl] if opts.cond else None, z[sl], c[sl] if opts.cond else None,
                gain=phase.interval if phase.name.endswith("reg") else 1)
            self._record(stats)
            if "Loss/signs/real" in stats:
                s = stats["Loss/signs/real"]
                signs += torch.tensor([float(s.sum()), s.numel()], dtype=torch.float64)
        params = [p for p in phase.module.parameters() if p.requires_grad]
        if self.dist.world > 1:
            grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
            flat = torch.cat([g.flatten() for g in grads])
            self.dist.all_reduce_sum(flat)
            flat /= self.dist.world
            for p, g in zip(params, flat.split([p.numel() for p in params])):
                p.grad = g.view_as(p).clone()
        for p in params:
            if p.grad is not None:
                torch.nan_to_num(p.grad, nan=0, posinf=1e5, neginf=-1e5, out=p.grad)
        phase.opt.step()
        phase.module.requires_grad_(False)
        self.phase_time[phase.name] = self.phase_time.get(phase.name, 0.0) + time.perf_counter() - t0
        return signs

    def step(self) -> None:
        """One training iteration over the global batch: the due phases, G_ema, ADA, counters."""
        opts = self.opts
        if self.model.on_step is not None:
            self.model.on_step(self.networks(), self.cur_nimg, opts)
        real_img, real_c = self._next_reals()
        all_z, all_c = self._draw_latents()
        torch.manual_seed(derive_seed(opts.seed, 2, self.batch_idx, self.dist.rank))
        signs = torch.zeros([2], dtype=torch.float64)
        for i, phase in enumerate(self.phases):
            if phase.interval == 0 or self.batch_idx % phase.interval != 0:
                continue
            signs += self._run_phase(phase, real_img, real_c, all_z[i], all_c[i])

        # Cross-process bookkeeping in one all-reduce: the model's shared buffers (w_avg), ADA signs, stop flag.
        shared = self.model.shared_buffers(self.G)
        sync = torch.cat([b.detach().double().flatten().cpu() for b in shared]
                         + [signs, torch.tensor([1.0 if self.stop.requested else 0.0], dtype=torch.float64)])
        if self.dist.world > 1:
            sync = sync.to(self.device)
            self.dist.all_reduce_sum(sync)
            sync = sync.cpu()
            start = 0
            for b in shared:
                b.copy_((sync[start: start + b.numel()] / self.dist.world).view_as(b).to(b.dtype))
                start += b.numel()
        # every process decides from the reduced flag, so all of them stop after the same step
        self.stop_now = bool(sync[-1] > 0)
        if self.stop_now and not self.stop.requested:
            self.stop.set("stop requested by another process")

        # G_ema: exponential moving average of G's weights, with ramp-up; buffers copied.
        with torch.no_grad():
            ema_nimg = opts.ema_kimg * 1000
            if opts.ema_rampup is not None:
                ema_nimg = min(ema_nimg, self.cur_nimg * opts.ema_rampup)
            beta = 0.5 ** (opts.batch / max(ema_nimg, 1e-8))
            for p_ema, p in zip(self.G_ema.parameters(), self.G.parameters()):
                p_ema.copy_(p.detach().lerp(p_ema, beta))
            for b_ema, b in zip(self.G_ema.buffers(), self.G.buffers()):
                b_ema.copy_(b)

        self.cur_nimg += opts.batch
        self.batch_idx += 1
        if self.ada is not None:
            s, n = float(sync[-3]), int(sync[-2])
            pend_s, pend_n = self.ada.pending()
            self.ada.set_pending(pend_s + s, pend_n + n)
            self.ada.step(opts.batch)
        if self.step_callback is not None:
            self.step_callback(self)

    # -- state ------------------------------------------------------------------------------------------------------

    def state_dict(self) -> Dict[str, Any]:
        from ..networks import network_spec

        def tensors(m):
            return {k: v.detach().cpu().clone() for k, v in m.state_dict().items()}

        return {
            "format": STATE_FORMAT, "version": STATE_VERSION,
            "options": self.opts.to_json(),
            "specs": json.dumps({k: network_spec(m) for k, m in self.networks().items()}),
            "networks": {k: tensors(m) for k, m in self.networks().items()},
            "optimizers": {k: opt.state_dict() for k, opt in self.opt.items()},
            **self.loss.state_dict(),
            "augment_p": self.augment_pipe.p.detach().cpu().clone() if self.augment_pipe is not None else None,
            "ada": self.ada.state_dict() if self.ada is not None else None,
            "progress": {"cur_nimg": self.cur_nimg, "cur_tick": self.cur_tick, "batch_idx": self.batch_idx,
                         "tick_start_nimg": self.tick_start_nimg, "total_time": self.total_time + self._elapsed()},
            "data_order": {"scheme": "perm(seed, epoch)", "seed": self.opts.seed, "num_items": len(self.dataset),
                           "next_sample": self.cur_nimg, "world": self.dist.world},
            "rng": rng_state(),
        }

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        for key, module in self.networks().items():
            try:
                module.load_state_dict(state["networks"][key], strict=True)
            except RuntimeError as e:
                raise StyleforgeError(f"resume state: {key} does not match the run's network config "
                                      f"({str(e).splitlines()[0][:160]})") from None
        for k, opt in self.opt.items():
            opt.load_state_dict(state["optimizers"][k])
        self.loss.load_state_dict(state)
        if self.augment_pipe is not None and state.get("augment_p") is not None:
            self.augment_pipe.p.copy_(state["augment_p"].to(self.device))
        if self.ada is not None and state.get("ada") is not None:
            self.ada.load_state_dict(state["ada"])
        pr = state["progress"]
        self.cur_nimg, self.cur_tick = int(pr["cur_nimg"]), int(pr["cur_tick"])
        self.batch_idx, self.tick_start_nimg = int(pr["batch_idx"]), int(pr["tick_start_nimg"])
        self.total_time = float(pr.get("total_time", 0.0))
        if "rng" in state:
            set_rng_state(state["rng"])
        self.close_data()
        self.resumed = True

    def save_state(self, path: Optional[Path] = None) -> Optional[Path]:
        if not self.dist.is_main or (path is None and self.run_dir is None):
            return None
        path = Path(path) if path is not None else self.run_dir / STATE_NAME
        state = self.state_dict()
        with atomic_path(path) as tmp:
            torch.save(state, tmp)
        return path

    def load_networks_from(self, bundle) -> None:
        """Fine-tuning: copy G, D and G_ema from a loaded network file (configs already match)."""
        src_G = bundle.networks.get("G") or bundle.networks.get("G_ema")
        src_E = bundle.networks.get("G_ema") or bundle.networks.get("G")
        with torch.no_grad():
            for dst, src in ((self.G, src_G), (self.G_ema, src_E), (self.D, bundle.networks.get("D"))):
                if src is None:
                    continue
                dst.load_state_dict({k: v.to(self.device) for k, v in src.state_dict().items()}, strict=True)
        # ADA's p starts again from --p (default 0), as in the official fine-tuning; it adapts quickly (ada_kimg 100)

    # -- snapshots --------------------------------------------------------------------------------------------------

    def _setup_grid(self):
        if self._grid is None:
            gw, gh = self.opts.grid
            idx = grid_indices(self.labels.numpy(), gw, gh, self.opts.seed)
            reals = torch.from_numpy(np.stack([self.dataset[i][0] for i in idx])).float() / 127.5 - 1
            c = self.labels[idx].to(self.device)
            z = torch.randn([gw * gh, self.G.z_dim], generator=torch.Generator().manual_seed(self.opts.seed))
            self._grid = (reals, z.to(self.device), c)
        return self._grid

    @torch.no_grad()
    def fakes(self) -> torch.Tensor:
        _, z, c = self._setup_grid()
        out = []
        for i in range(0, len(z), self.opts.batch_gpu):
            zz = z[i: i + self.opts.batch_gpu]
            cc = c[i: i + self.opts.batch_gpu] if self.opts.cond else None
            out.append(self.model.sample(self.G_ema, zz, cc, self.opts).cpu())
        return torch.cat(out)

    def save_images(self, name: str) -> Optional[Path]:
        if not self.writes:
            return None
        grid = grid_uint8(self.fakes(), self.opts.grid[0])
        path = save_image(grid, self.run_dir / name)
        self.tensorboard.image("fakes", grid, self.cur_nimg // 1000)
        try:
            write_fakes_gif(self.run_dir)
        except Exception:  # noqa: BLE001 - the GIF is a convenience; a failure must not stop training
            pass
        return path

    def save_snapshot(self) -> Optional[Path]:
        from ..networks.checkpoint import save_networks

        if not self.writes:
            return None
        o = self.opts
        extra = {
            "training_set_kwargs": {"path": o.data, "resolution": o.resolution, "use_labels": o.cond,
                                    "xflip": o.mirror, "max_size": None},
            "progress": {"cur_nimg": self.cur_nimg, "kimg": self.cur_nimg / 1000, "cur_tick": self.cur_tick},
            "training": {"cfg": o.cfg, "run_dir": o.run_dir, "gamma": o.gamma, "batch": o.batch},
        }
        tensors_extra = {}
        if self.augment_pipe is not None:
            extra["augment_pipe"] = {"config": self.augment_pipe.config_dict()}
            tensors_extra["augment_pipe.p"] = self.augment_pipe.p
        path = self.run_dir / f"network-snapshot-{self.cur_nimg // 1000:06d}.safetensors"
        return save_networks(path, self.networks(), extra=extra, tensors_extra=tensors_extra)

    # -- the loop ---------------------------------------------------------------------------------------------------

    def _elapsed(self) -> float:
        return time.time() - self._start_time if hasattr(self, "_start_time") else 0.0

    def _tick_report(self, tick_time: float, tick_kimg: float, maintenance: float) -> Dict[str, Any]:
        keys = sorted(self.tick_stats)
        vec = torch.tensor([v for k in keys for v in self.tick_stats[k]], dtype=torch.float64)
        if self.dist.world > 1 and len(vec):
            vec = vec.to(self.device)
            self.dist.all_reduce_sum(vec)
            vec = vec.cpu()
        stats: Dict[str, Any] = {}
        for i, k in enumerate(keys):
            n, s, ss = (float(x) for x in vec[3 * i: 3 * i + 3])
            mean = s / n if n else float("nan")
            std = math.sqrt(max(ss / n - mean**2, 0.0)) if n else float("nan")
            stats[k] = {"num": n, "mean": mean, "std": std}
        scalars = {
            "Progress/tick": self.cur_tick, "Progress/kimg": self.cur_nimg / 1000,
            "Progress/augment": float(self.augment_pipe.p) if self.augment_pipe is not None else 0.0,
            "Timing/total_sec": self.total_time + self._elapsed(), "Timing/sec_per_tick": tick_time,
            "Timing/sec_per_kimg": tick_time / max(tick_kimg, 1e-8), "Timing/maintenance_sec": maintenance,
        }
        if self.ada is not None and self.ada.r_t is not None:
            scalars["Progress/ada_rt"] = self.ada.r_t
        scalars.update(peak_memory_gb(self.device))
        for k, v in scalars.items():
            stats[k] = {"num": 1, "mean": float(v), "std": 0.0}
        self.tick_stats = {}
        return stats

    def _write_stats(self, stats: Dict[str, Any]) -> None:
        if self.writes:
            append_stats(self.run_dir / "stats.jsonl", stats)
            self.tensorboard.scalars(stats, int(self.cur_nimg / 1000))

    def run(self) -> Dict[str, Any]:
        """Train until ``kimg`` or a stop request. Returns a summary dict. The data-loader workers, the TensorBoard
        writer and the log file are closed on the way out, however it is left."""
        try:
            return self._train_until_done()
        finally:
            self.close_data()
            if self.tensorboard is not None:
                self.tensorboard.close()
            self.log.close()

    def _train_until_done(self) -> Dict[str, Any]:
        o = self.opts
        total_nimg = o.total_nimg
        self._start_time = time.time()
        result: Dict[str, Any] = {"snapshot": None, "state": None, "stopped": False}
        if self.writes and not self.resumed:
            save_image(grid_uint8(self._setup_grid()[0], o.grid[0]), self.run_dir / "reals.png")
            self.save_images("fakes_init.png")
        if self.cur_nimg >= total_nimg:
            self.log(StyleforgeWarning(f"training is already at {self.cur_nimg / 1000:g} kimg ({{kimg}} {o.kimg:g}); "
                                       "pass a larger {kimg} to continue", also={"kimg": "kimg"}))
            result.update(done=True, cur_nimg=self.cur_nimg)
            return result
        self.log(f"training for {o.kimg:g} kimg from {self.cur_nimg / 1000:g} kimg "
                 f"({self.dist.world} process(es), device {self.device}, batch {o.batch})")
        tick_start_time = time.time()
        maintenance = 0.0
        tick_start_nimg_for_rate = self.cur_nimg
        while True:
            self.step()
            done = self.cur_nimg >= total_nimg
            at_tick = done or self.cur_tick == 0 or self.cur_nimg >= self.tick_start_nimg + o.kimg_per_tick * 1000
            if at_tick:
                tick_end_time = time.time()
                tick_time = tick_end_time - tick_start_time
                stats = self._tick_report(tick_time, (self.cur_nimg - tick_start_nimg_for_rate) / 1000, maintenance)
                self.log(tick_line(stats, self.cur_tick, self.cur_nimg))
                self._write_stats(stats)
                if done or self.cur_tick % o.image_snap == 0:
                    self.save_images(f"fakes{self.cur_nimg // 1000:06d}.png")
                if done or self.cur_tick % o.snap == 0:
                    result["snapshot"] = self.save_snapshot()
                    self.cur_tick += 1
                    self.tick_start_nimg = self.cur_nimg
                    result["state"] = self.save_state()
                    if result["snapshot"] is not None and self.snapshot_callback is not None:
                        self.snapshot_callback(self, result["snapshot"])
                else:
                    self.cur_tick += 1
                    self.tick_start_nimg = self.cur_nimg
                tick_start_nimg_for_rate = self.cur_nimg
                tick_start_time = time.time()
                maintenance = tick_start_time - tick_end_time
            if done:
                break
            # one process: stop right after this step; several: after the step whose all-reduce saw the flag
            if self.stop_now or (self.dist.world == 1 and self.stop.requested):
                result["state"] = self.save_state()
                result["stopped"] = True
                self.log(StyleforgeWarning(f"stopped at {self.cur_nimg / 1000:g} kimg ({self.stop.reason}); state "
                                           f"saved to {result['state']}; continue with {{resume}} auto",
                                           also={"resume": "resume"}))
                break
        result.update(done=done, cur_nimg=self.cur_nimg)
        return result
