"""The StyleGAN2-ADA training loop: run directories, snapshots, exact resume, multi-process training.

Entry point: :func:`train` (behind ``scripts/train.py`` / ``styleforge train``). One call resolves the options
(:mod:`.presets`), picks or creates the run directory ``<outdir>/<id:05d>-<desc>/``, optionally loads a network
to fine-tune or a resume state, and runs :class:`Trainer` until ``kimg`` thousand images have been shown or a
stop was requested (SIGTERM/SIGINT, or ``Trainer.stop.set()``), which finishes the current step, saves the state
and returns normally.

Reproducibility design (what makes a resumed run bit-identical to an uninterrupted one on CPU in deterministic
mode):

* Data order is stateless: sample number ``i`` of the run is ``perm(seed, epoch)[i % N]`` with
  ``epoch = i // N`` and ``perm`` a seeded permutation; step ``s`` of process ``r`` reads samples
  ``s*batch + r*batch/world ...``. Only the step counter is needed to continue the stream.
* Random draws are re-seeded every step: latents and generated labels from ``(seed, step)`` (the same global
  batch on every process, each taking its slice), everything else (noise inputs, style mixing, augmentation,
  path-length noise) from ``(seed, step, rank)`` through the global torch RNG.
* Everything else that evolves is in the state file: weights (G, D, G_ema, their buffers such as ``w_avg``),
  both Adam states, ``pl_mean``, the ADA controller (p and its partial interval) and the progress counters.
  The RNG states are saved too (and restored) for completeness, though the re-seeding makes them redundant.

Processes (``torchrun --nproc_per_node N``; gloo on CPU, NCCL on CUDA) split the global batch, average their
gradients with one all-reduce per phase (no DDP wrapper, so lazy regularisation needs no special care), average
``w_avg``, ``pl_mean`` and the ADA statistics, and so hold identical weights after every step. Only rank 0 writes.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import math
import os
import random
import re
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import numpy as np
import torch

from ..errors import StyleforgeError
from ..images import make_grid, read_image, uint8_as_training
from ..video import write_gif
from ..utils.fileio import atomic_path, ensure_outdir, save_image, save_json
from .presets import TrainingOptions, TrainSettings, resolve_options

try:
    import resource
except ImportError:  # Windows
    resource = None

STATE_NAME = "resume-state.pt"
STATE_FORMAT = "styleforge-train-state"
STATE_VERSION = 1
# Options that may change when a run is resumed (they do not affect the training math).
RUNTIME_OPTIONS = ("kimg", "snap", "image_snap", "kimg_per_tick", "metrics", "workers", "device", "deterministic")


# ---------------------------------------------------------------------------------------------------------------------
# Processes.


@dataclass
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    initialized_here: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def all_reduce_sum(self, t: torch.Tensor) -> torch.Tensor:
        if self.world > 1:
            torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.SUM)
        return t

    def reduce_mean(self, t: torch.Tensor) -> torch.Tensor:
        """The mean of ``t`` over processes (a detached copy)."""
        return self.all_reduce_sum(t.detach().clone()) / self.world

    def broadcast_object(self, obj: Any) -> Any:
        if self.world == 1 or not torch.distributed.is_initialized():
            return obj
        box = [obj]
        torch.distributed.broadcast_object_list(box, src=0)
        return box[0]


def _launched_by_torchrun() -> bool:
    return "WORLD_SIZE" in os.environ and "RANK" in os.environ


def setup_distributed(gpus: Optional[int], device: str) -> DistInfo:
    """Processes and device: torchrun's environment when present, else one process (CUDA: spawn is the caller's)."""
    from ..utils.runtime import resolve_device

    if gpus is not None and (gpus < 1 or gpus & (gpus - 1)):
        raise StyleforgeError(f"--gpus {gpus}: must be a power of two (1, 2, 4, ...)")
    if not _launched_by_torchrun():
        n = gpus or 1
        dev = resolve_device(device)
        if n > 1:
            if dev.type == "cuda":
                have = torch.cuda.device_count()
                if n > have:
                    raise StyleforgeError(f"--gpus {n}: only {have} CUDA device(s) are present; use --gpus {max(have, 1)}")
            else:
                raise StyleforgeError(
                    f"--gpus {n} on CPU needs one process per rank: launch with "
                    f"'torchrun --nproc_per_node {n} scripts/train.py ...' (or use --gpus 1)")
        return DistInfo(device=dev, world=n)
    world = int(os.environ["WORLD_SIZE"])
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    if gpus is not None and gpus != world:
        raise StyleforgeError(f"--gpus {gpus} does not match torchrun's {world} process(es); drop --gpus or make them equal")
    if world & (world - 1):
        raise StyleforgeError(f"torchrun started {world} processes; training needs a power of two")
    name = (device or "auto").lower()
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise StyleforgeError("--device cuda: no CUDA device is available here; use --device cpu")
        if local_rank >= torch.cuda.device_count():
            raise StyleforgeError(f"torchrun local rank {local_rank}: only {torch.cuda.device_count()} CUDA device(s)")
        dev = torch.device("cuda", local_rank)
        torch.cuda.set_device(dev)
        backend = "nccl"
    elif name == "cpu":
        dev, backend = torch.device("cpu"), "gloo"
    else:
        raise StyleforgeError(f"--device {device}: multi-process training supports cpu and cuda")
    info = DistInfo(rank=rank, world=world, local_rank=local_rank, device=dev)
    if not torch.distributed.is_initialized():
        torch.distributed.init_process_group(backend=backend, rank=rank, world_size=world)
        info.initialized_here = True
    return info


def _derive_seed(*parts: int) -> int:
    """A 63-bit seed from integers (numpy SeedSequence hashing: unrelated streams for nearby inputs)."""
    a, b = np.random.SeedSequence([int(p) & 0xFFFFFFFF for p in parts]).generate_state(2, np.uint32)
    return ((int(a) << 32) | int(b)) & ((1 << 63) - 1)


class StopFlag:
    """Set by the SIGTERM/SIGINT handlers (or a test): the loop finishes the step, saves its state and returns."""

    def __init__(self):
        self.requested = False
        self.reason = ""

    def set(self, reason: str = "stop requested") -> None:
        self.requested = True
        self.reason = self.reason or reason


@contextlib.contextmanager
def _stop_on_signals(stop: StopFlag, log: Callable[[str], None]):
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {}
    owner = os.getpid()

    def handler(signum, frame):
        if os.getpid() != owner:  # a forked data-loader worker (Ctrl-C reaches the whole process group)
            return
        name = signal.Signals(signum).name
        if stop.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        stop.set(name)
        log(f"{name} received: finishing the current step, then saving the state (Ctrl-C again to abort)")

    for sig in (signal.SIGTERM, signal.SIGINT):
        previous[sig] = signal.signal(sig, handler)
    try:
        yield
    finally:
        for sig, h in previous.items():
            signal.signal(sig, h)


# ---------------------------------------------------------------------------------------------------------------------
# Data.


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


def open_dataset(path: str, cond: bool = True, mirror: bool = False):
    from .dataset import ImageDataset

    return ImageDataset(path, use_labels=cond, xflip=mirror)


# ---------------------------------------------------------------------------------------------------------------------
# Small helpers.


def _grid_uint8(images: torch.Tensor, cols: int) -> np.ndarray:
    """[N, C, H, W] in [-1, 1] -> HWC uint8 grid, converted as the official training loop converts."""
    return make_grid(list(uint8_as_training(images)), cols=cols)


def _write_gif(run_dir: Path) -> Optional[Path]:
    """fakes.gif from fakes_init.png and every fakesNNNNNN.png, in training order (frames at most 1024 px)."""
    frames = sorted(run_dir.glob("fakes[0-9]*.png"))
    if (run_dir / "fakes_init.png").exists():
        frames.insert(0, run_dir / "fakes_init.png")
    if len(frames) < 2:
        return None
    return write_gif([read_image(f, "RGB") for f in frames], run_dir / "fakes.gif", fps=1000 / 300, max_side=1024)


def _peak_memory_gb(device: torch.device) -> Dict[str, float]:
    out = {}
    if resource is not None:
        out["Resources/peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    if device.type == "cuda":
        out["Resources/peak_gpu_mem_gb"] = torch.cuda.max_memory_allocated(device) / 2**30
    return out


def _fmt_time(s: float) -> str:
    s = int(round(s))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h {(s // 60) % 60:02d}m"
    return f"{s // 86400}d {(s // 3600) % 24:02d}h"


def _rng_state() -> Dict[str, Any]:
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    st = {"torch": torch.get_rng_state(),
          "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                    "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
          "python": random.getstate()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st


def _set_rng_state(st: Dict[str, Any]) -> None:
    torch.set_rng_state(st["torch"].cpu())
    n = st["numpy"]
    np.random.set_state((n["kind"], n["keys"].cpu().numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    random.setstate(st["python"])
    if "cuda" in st and torch.cuda.is_available():
        with contextlib.suppress(Exception):
            torch.cuda.set_rng_state_all([t.cpu() for t in st["cuda"]])


def _first_sentence(e: BaseException) -> str:
    """The first sentence of an exception's message (torch appends paragraphs of advice), or its type's name."""
    msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return re.split(r"(?<=\w)\. ", msg, maxsplit=1)[0].rstrip(".").replace("PytorchStreamReader ", "")


def load_state_file(path: Path, map_location="cpu") -> Dict[str, Any]:
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001 - any failure here is a bad file for the user
        reason = _first_sentence(e)
        if not (isinstance(e, EOFError) or "zip archive" in reason):
            raise StyleforgeError(f"{path}: not a styleforge training state ({reason}); pass a resume-state.pt "
                                  "written by train.py") from None
        snaps = sorted(Path(path).parent.glob("network-snapshot-*.safetensors"))
        instead = (f"move it away and continue from the last snapshot with --resume {snaps[-1]} (optimiser state "
                   "and progress start again)" if snaps else "move it away and start a new run")
        raise StyleforgeError(f"{path}: truncated or corrupt training state ({reason}); it cannot be resumed: copy "
                              f"it again if it was transferred, else {instead}") from None
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise StyleforgeError(f"{path}: a torch file, but not a styleforge training state")
    if int(state.get("version", 0)) > STATE_VERSION:
        raise StyleforgeError(f"{path}: written by a newer styleforge (state version {state['version']}); upgrade")
    return state


def is_state_file(path: Path) -> bool:
    from ..networks.checkpoint import sniff_format

    return path.is_file() and sniff_format(path) == "zip"


# ---------------------------------------------------------------------------------------------------------------------
# The trainer.


@dataclass
class Phase:
    name: str
    module: torch.nn.Module
    opt: torch.optim.Optimizer
    interval: int


def _loader_worker_init(_worker_id: int) -> None:
    """Data-loader workers leave SIGTERM/SIGINT to the main process. A scheduler's preemption signal (SLURM
    signals the whole job) or Ctrl-C (the whole foreground group) reaches the workers too; if they died of it,
    the main process would fail with "DataLoader worker killed" instead of saving its state and exiting 0."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class Trainer:
    """Networks, optimisers, augmentation and loss of one run, with ``step()``, ``run()`` and state save/load.

    ``run_dir`` None: nothing is written (benchmarks, tests of single steps).
    """

    def __init__(self, opts: TrainingOptions, dist: Optional[DistInfo] = None, run_dir: Optional[Path] = None,
                 log: Optional[Callable[[str], None]] = None, dataset=None,
                 step_callback: Optional[Callable[["Trainer"], None]] = None,
                 snapshot_callback: Optional[Callable[["Trainer", Path], None]] = None):
        from ..networks import Discriminator, DiscriminatorConfig, Generator, GeneratorConfig
        from .augment import make_augment
        from .loss import StyleGAN2Loss

        self.opts = opts
        self.dist = dist or DistInfo()
        self.device = self.dist.device
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.log = log or (lambda msg: None)
        self.stop = StopFlag()
        self.step_callback = step_callback
        self.snapshot_callback = snapshot_callback
        if opts.batch % (opts.batch_gpu * self.dist.world):
            raise StyleforgeError(f"batch {opts.batch} is not divisible by {self.dist.world} process(es) x {opts.batch_gpu}")

        self.dataset = dataset if dataset is not None else open_dataset(opts.data, cond=opts.cond, mirror=opts.mirror)
        labels = [self.dataset.get_label(i) for i in range(len(self.dataset))] if opts.cond else []
        self.labels = (torch.from_numpy(np.stack(labels)).float() if opts.cond
                       else torch.zeros([len(self.dataset), 0]))

        torch.manual_seed(opts.seed)
        self.G = Generator(GeneratorConfig.from_dict(opts.G)).train().requires_grad_(False).to(self.device)
        self.D = Discriminator(DiscriminatorConfig.from_dict(opts.D)).train().requires_grad_(False).to(self.device)
        self.G_ema = copy.deepcopy(self.G).eval()
        self.augment_pipe, self.ada = (None, None)
        if opts.aug != "noaug":
            self.augment_pipe, self.ada = make_augment(opts.aug, opts.augpipe, p=opts.p, target=opts.target,
                                                       interval=opts.ada_interval, ada_kimg=opts.ada_kimg)
            self.augment_pipe = self.augment_pipe.train().requires_grad_(False).to(self.device)
        self.loss = StyleGAN2Loss(
            self.G, self.D, self.augment_pipe, r1_gamma=opts.gamma, style_mixing_prob=opts.style_mixing_prob,
            pl_weight=opts.pl_weight, pl_batch_shrink=opts.pl_batch_shrink, pl_decay=opts.pl_decay,
            fp16=opts.fp16, reduce_mean=self.dist.reduce_mean if self.dist.world > 1 else None)

        self.phases: List[Phase] = []
        self.opt: Dict[str, torch.optim.Optimizer] = {}
        for name, module, reg_interval, active in [("G", self.G, opts.G_reg_interval, opts.pl_weight != 0),
                                                   ("D", self.D, opts.D_reg_interval, opts.gamma != 0)]:
            mb_ratio = reg_interval / (reg_interval + 1)  # lazy regularisation: compensate lr and betas
            opt = torch.optim.Adam(module.parameters(), lr=opts.lrate * mb_ratio,
                                   betas=tuple(b**mb_ratio for b in opts.betas), eps=opts.eps)
            self.opt[name] = opt
            self.phases.append(Phase(name + "main", module, opt, 1))
            # an inactive regulariser (weight 0) takes no optimiser step at all
            self.phases.append(Phase(name + "reg", module, opt, reg_interval if active else 0))

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
        self._tb = None

    # -- distributed helpers -----------------------------------------------------------------------------------------

    def broadcast_weights(self) -> None:
        """Make every process start from rank 0's weights (cheap insurance on top of identical seeding)."""
        if self.dist.world == 1:
            return
        with torch.no_grad():
            for module in (self.G, self.D, self.G_ema):
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
        g = torch.Generator().manual_seed(_derive_seed(opts.seed, 1, self.batch_idx))
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
                gain=phase.interval)
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
        real_img, real_c = self._next_reals()
        all_z, all_c = self._draw_latents()
        torch.manual_seed(_derive_seed(opts.seed, 2, self.batch_idx, self.dist.rank))
        signs = torch.zeros([2], dtype=torch.float64)
        for i, phase in enumerate(self.phases):
            if phase.interval == 0 or self.batch_idx % phase.interval != 0:
                continue
            signs += self._run_phase(phase, real_img, real_c, all_z[i], all_c[i])

        # Cross-process bookkeeping in one all-reduce: w_avg, ADA signs, stop flag.
        sync = torch.cat([self.G.mapping.w_avg.detach().double().flatten().cpu() if hasattr(self.G.mapping, "w_avg")
                          else torch.zeros([0], dtype=torch.float64),
                          signs, torch.tensor([1.0 if self.stop.requested else 0.0], dtype=torch.float64)])
        if self.dist.world > 1:
            sync = sync.to(self.device)
            self.dist.all_reduce_sum(sync)
            sync = sync.cpu()
            if hasattr(self.G.mapping, "w_avg"):
                n = self.G.mapping.w_avg.numel()
                self.G.mapping.w_avg.copy_((sync[:n] / self.dist.world).to(self.G.mapping.w_avg.dtype))
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
            "specs": json.dumps({k: network_spec(m) for k, m in (("G", self.G), ("D", self.D), ("G_ema", self.G_ema))}),
            "networks": {"G": tensors(self.G), "D": tensors(self.D), "G_ema": tensors(self.G_ema)},
            "optimizers": {k: opt.state_dict() for k, opt in self.opt.items()},
            "pl_mean": self.loss.pl_mean.detach().cpu().clone(),
            "augment_p": self.augment_pipe.p.detach().cpu().clone() if self.augment_pipe is not None else None,
            "ada": self.ada.state_dict() if self.ada is not None else None,
            "progress": {"cur_nimg": self.cur_nimg, "cur_tick": self.cur_tick, "batch_idx": self.batch_idx,
                         "tick_start_nimg": self.tick_start_nimg, "total_time": self.total_time + self._elapsed()},
            "data_order": {"scheme": "perm(seed, epoch)", "seed": self.opts.seed, "num_items": len(self.dataset),
                           "next_sample": self.cur_nimg, "world": self.dist.world},
            "rng": _rng_state(),
        }

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        for key, module in (("G", self.G), ("D", self.D), ("G_ema", self.G_ema)):
            try:
                module.load_state_dict(state["networks"][key], strict=True)
            except RuntimeError as e:
                raise StyleforgeError(f"resume state: {key} does not match the run's network config "
                                      f"({str(e).splitlines()[0][:160]})") from None
        for k, opt in self.opt.items():
            opt.load_state_dict(state["optimizers"][k])
        self.loss.pl_mean.copy_(state["pl_mean"].to(self.device))
        if self.augment_pipe is not None and state.get("augment_p") is not None:
            self.augment_pipe.p.copy_(state["augment_p"].to(self.device))
        if self.ada is not None and state.get("ada") is not None:
            self.ada.load_state_dict(state["ada"])
        pr = state["progress"]
        self.cur_nimg, self.cur_tick = int(pr["cur_nimg"]), int(pr["cur_tick"])
        self.batch_idx, self.tick_start_nimg = int(pr["batch_idx"]), int(pr["tick_start_nimg"])
        self.total_time = float(pr.get("total_time", 0.0))
        if "rng" in state:
            _set_rng_state(state["rng"])
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
        if self._grid is not None:
            return self._grid
        gw, gh = self.opts.grid
        n = gw * gh
        ds = self.dataset
        rnd = np.random.RandomState(self.opts.seed)
        if self.opts.cond and self.labels.shape[1] > 0:
            keys = [tuple(row) for row in self.labels.numpy().tolist()]
            groups: Dict[tuple, List[int]] = {}
            for i in rnd.permutation(len(ds)):
                groups.setdefault(keys[i], []).append(int(i))
            order = sorted(groups)
            idx = []
            for y in range(gh):
                members = groups[order[y % len(order)]]
                idx += [members[x % len(members)] for x in range(gw)]
        else:
            idx = list(np.resize(rnd.permutation(len(ds)), n))
        reals = torch.from_numpy(np.stack([ds[i][0] for i in idx])).float() / 127.5 - 1
        c = self.labels[idx].to(self.device)
        z = torch.randn([n, self.G.z_dim], generator=torch.Generator().manual_seed(self.opts.seed)).to(self.device)
        self._grid = (reals, z, c)
        return self._grid

    @torch.no_grad()
    def fakes(self) -> torch.Tensor:
        _, z, c = self._setup_grid()
        out = []
        for i in range(0, len(z), self.opts.batch_gpu):
            zz = z[i: i + self.opts.batch_gpu]
            cc = c[i: i + self.opts.batch_gpu] if self.opts.cond else None
            out.append(self.G_ema(zz, cc, noise_mode="const", fp16=self.opts.fp16).cpu())
        return torch.cat(out)

    def _tensorboard(self):
        if self._tb is None and self.run_dir is not None and self.dist.is_main:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(str(self.run_dir))
            except Exception:  # noqa: BLE001 - tensorboard is optional
                self._tb = False
        return self._tb or None

    def save_images(self, name: str) -> Optional[Path]:
        if self.run_dir is None or not self.dist.is_main:
            return None
        grid = _grid_uint8(self.fakes(), self.opts.grid[0])
        path = save_image(grid, self.run_dir / name)
        tb = self._tensorboard()
        if tb is not None:
            tb.add_image("fakes", grid, global_step=self.cur_nimg // 1000, dataformats="HWC")
        with contextlib.suppress(Exception):
            _write_gif(self.run_dir)
        return path

    def save_snapshot(self) -> Optional[Path]:
        from ..networks.checkpoint import save_networks

        if self.run_dir is None or not self.dist.is_main:
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
        return save_networks(path, {"G": self.G, "D": self.D, "G_ema": self.G_ema}, extra=extra,
                             tensors_extra=tensors_extra)

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
        scalars.update(_peak_memory_gb(self.device))
        for k, v in scalars.items():
            stats[k] = {"num": 1, "mean": float(v), "std": 0.0}
        self.tick_stats = {}
        return stats

    def _write_stats(self, stats: Dict[str, Any]) -> None:
        if self.run_dir is None or not self.dist.is_main:
            return
        line = dict(stats)
        line["timestamp"] = time.time()
        with open(self.run_dir / "stats.jsonl", "a") as f:
            f.write(json.dumps(line) + "\n")
        tb = self._tensorboard()
        if tb is not None:
            for k, v in stats.items():
                tb.add_scalar(k, v["mean"], global_step=int(self.cur_nimg / 1000))
            tb.flush()

    def run(self) -> Dict[str, Any]:
        """Train until ``kimg`` or a stop request. Returns a summary dict. The data-loader workers and the
        TensorBoard writer are closed on the way out, however it is left."""
        try:
            return self._train_until_done()
        finally:
            self.close_data()
            if self._tb:
                self._tb.close()
                self._tb = None

    def _train_until_done(self) -> Dict[str, Any]:
        o = self.opts
        total_nimg = o.total_nimg
        self._start_time = time.time()
        result: Dict[str, Any] = {"snapshot": None, "state": None, "stopped": False}
        if self.run_dir is not None and self.dist.is_main and not self.resumed:
            reals = self._setup_grid()[0]
            save_image(_grid_uint8(reals, o.grid[0]), self.run_dir / "reals.png")
            self.save_images("fakes_init.png")
        if self.cur_nimg >= total_nimg:
            self.log(f"training is already at {self.cur_nimg / 1000:g} kimg (--kimg {o.kimg:g}); "
                     "pass a larger --kimg to continue")
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
                self._log_tick(stats)
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
                self.log(f"stopped at {self.cur_nimg / 1000:g} kimg ({self.stop.reason}); state saved to "
                         f"{result['state']}; continue with --resume auto")
                break
        result.update(done=done, cur_nimg=self.cur_nimg)
        return result

    def _log_tick(self, stats: Dict[str, Any]) -> None:
        def m(k):
            return stats[k]["mean"] if k in stats else float("nan")

        parts = [f"tick {self.cur_tick:<5d}", f"kimg {self.cur_nimg / 1000:<8.3f}",
                 f"time {_fmt_time(m('Timing/total_sec')):<9s}", f"sec/tick {m('Timing/sec_per_tick'):<7.1f}",
                 f"sec/kimg {m('Timing/sec_per_kimg'):<7.1f}", f"maint {m('Timing/maintenance_sec'):<5.1f}",
                 f"rss {m('Resources/peak_rss_gb'):.2f}G"]
        if "Resources/peak_gpu_mem_gb" in stats:
            parts.append(f"gpumem {m('Resources/peak_gpu_mem_gb'):.2f}G")
        parts.append(f"augment {m('Progress/augment'):.3f}")
        parts.append(f"G {m('Loss/G/loss'):.3f} D {m('Loss/D/loss'):.3f}")
        if "Loss/r1_penalty" in stats:
            parts.append(f"r1 {m('Loss/r1_penalty'):.3g}")
        if "Loss/pl_penalty" in stats:
            parts.append(f"pl {m('Loss/pl_penalty'):.3g}")
        self.log("  ".join(parts))


# ---------------------------------------------------------------------------------------------------------------------
# Run directories and the entry point.


_RUN_DIR = re.compile(r"^(\d+)-")


def _run_dirs(outdir: Path) -> List[Path]:
    if not outdir.is_dir():
        return []
    dirs = [d for d in outdir.iterdir() if d.is_dir() and _RUN_DIR.match(d.name)]
    return sorted(dirs, key=lambda d: int(_RUN_DIR.match(d.name).group(1)))


def find_auto_resume(outdir: Path, data: str, cfg: str) -> Optional[Path]:
    """The newest run dir of ``outdir`` trained on ``data`` with ``cfg`` that has a resume state."""
    for d in reversed(_run_dirs(outdir)):
        try:
            o = json.loads((d / "training_options.json").read_text())
        except (OSError, ValueError):
            continue
        if o.get("data") == data and o.get("cfg") == cfg and (d / STATE_NAME).is_file():
            return d
    return None


def make_run_dir(outdir: Path, desc: str) -> Path:
    ensure_outdir(outdir, flag="--outdir")
    while True:
        ids = [int(_RUN_DIR.match(d.name).group(1)) for d in _run_dirs(outdir)]
        run_dir = outdir / f"{max(ids, default=-1) + 1:05d}-{desc}"
        try:
            run_dir.mkdir()
            return run_dir
        except FileExistsError:
            continue
        except OSError as e:
            raise StyleforgeError(f"{outdir}: cannot create a run folder ({e.strerror}); choose another --outdir") from None


class _Logger:
    def __init__(self, enabled: bool, echo: bool):
        self.enabled = enabled
        self.echo = echo
        self.file = None

    def open(self, path: Path) -> None:
        if self.enabled:
            self.file = open(path, "a", buffering=1)

    def __call__(self, msg: str) -> None:
        if not self.enabled:
            return
        if self.echo:
            print(msg, flush=True)
        if self.file is not None:
            self.file.write(msg + "\n")

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None


@dataclass
class TrainResult:
    run_dir: Optional[Path]
    options: TrainingOptions
    snapshot: Optional[Path] = None
    state: Optional[Path] = None
    cur_nimg: int = 0
    stopped: bool = False
    done: bool = False
    rank: int = 0  # this process's rank (torchrun): only rank 0 reports


def _check_data_matches(opts_res: int, opts_ch: int, c_dim: int, ds, cond: bool, what: str) -> None:
    if ds.resolution != opts_res:
        raise StyleforgeError(f"--data is {ds.resolution}x{ds.resolution} but {what} is {opts_res}x{opts_res}; "
                              f"use a {opts_res}x{opts_res} dataset (dataset_tool.py --resolution {opts_res})")
    if ds.num_channels != opts_ch:
        raise StyleforgeError(f"--data has {ds.num_channels} channel(s) but {what} has {opts_ch}; "
                              f"re-create the dataset with {'--grayscale' if opts_ch == 1 else '--rgb'}")
    labels = ds.label_dim if cond else 0
    if labels != c_dim:
        if c_dim and not cond:
            raise StyleforgeError(f"{what} is conditional ({c_dim} labels): pass --cond with a labelled dataset")
        raise StyleforgeError(f"--data has {labels} label(s) per image but {what} expects {c_dim} (c_dim); "
                              "use a dataset with matching labels" + ("" if c_dim else " or drop --cond"))


def _deep_update(d: Dict[str, Any], u: Dict[str, Any]) -> Dict[str, Any]:
    out = dict(d)
    for k, v in u.items():
        out[k] = _deep_update(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def train(
    outdir: str,
    data: str,
    *,
    settings: Optional[TrainSettings] = None,
    gpus: Optional[int] = None,
    dry_run: bool = False,
    echo: bool = True,
    overrides: Optional[Dict[str, Any]] = None,
    step_callback: Optional[Callable[[Trainer], None]] = None,
    snapshot_callback: Optional[Callable[[Trainer, Path], None]] = None,
    handle_signals: bool = True,
    **fields: Any,
) -> TrainResult:
    """Train (or continue training) a StyleGAN2-ADA model; see ``scripts/train.py --help`` for the flags.

    The user's choices are a :class:`~styleforge.train.presets.TrainSettings` (``settings``) and/or its fields as
    keywords (``train(outdir, data, cfg="cpu", kimg=10)``), which replace those of ``settings``.
    ``overrides``: extra settings merged (deeply) into the resolved :class:`TrainingOptions` of a new run, e.g.
    ``{'G': {'synthesis': {'channel_max': 32}}}`` (tests and benchmarks use it for tiny networks).
    ``step_callback(trainer)`` runs after every step; calling ``trainer.stop.set()`` there is exactly what
    SIGTERM does.
    """
    s = dataclasses.replace(settings or TrainSettings(), **fields)
    if s.workers is None:  # more loader processes than spare cores only slows training down
        s = dataclasses.replace(s, workers=max(min(3, (os.cpu_count() or 1) - 1), 0))
    if s.metrics:
        raise StyleforgeError(f"--metrics {','.join(s.metrics)}: metrics are not available yet; use --metrics none")
    # the run's settings, passed on unchanged to _train (here, or in each spawned process)
    run_kw = dict(outdir=outdir, data=data, settings=s, overrides=overrides)
    if not _launched_by_torchrun() and (gpus or 1) > 1:
        setup_distributed(gpus, s.device)  # the checks: CUDA with enough devices (CPU needs torchrun)
        # validate everything here first, so that bad input gives one line instead of one per process
        pre = _train(dist=DistInfo(world=gpus), log=_Logger(enabled=dry_run, echo=echo), dry_run=True,
                     step_callback=None, snapshot_callback=None, handle_signals=False, **run_kw)
        if dry_run:
            return pre
        return spawn_training(gpus, dict(run_kw, echo=echo, step_callback=step_callback,
                                         snapshot_callback=snapshot_callback))
    prev_det = torch.are_deterministic_algorithms_enabled()
    dist = setup_distributed(gpus, s.device)
    log = _Logger(enabled=dist.is_main, echo=echo)
    try:
        if s.deterministic:
            torch.use_deterministic_algorithms(True)
            torch.backends.cudnn.benchmark = False
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        elif dist.device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        res = _train(dist=dist, log=log, dry_run=dry_run, step_callback=step_callback,
                     snapshot_callback=snapshot_callback, handle_signals=handle_signals, **run_kw)
        if dist.initialized_here and torch.distributed.is_initialized():
            torch.distributed.barrier()  # every rank is done communicating before the group is torn down
        return res
    finally:
        log.close()
        torch.use_deterministic_algorithms(prev_det)
        if dist.initialized_here and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def _free_port() -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _spawn_entry(rank: int, nprocs: int, port: int, kwargs: Dict[str, Any], queue) -> None:
    import sys

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
                      WORLD_SIZE=str(nprocs))
    try:
        r = train(gpus=None, **kwargs)
    except StyleforgeError as e:
        if rank == 0:
            print(f"error: {e}", file=sys.stderr, flush=True)
        sys.exit(1)
    if rank == 0:
        queue.put({"run_dir": str(r.run_dir) if r.run_dir else None, "options": r.options.to_dict(),
                   "snapshot": str(r.snapshot) if r.snapshot else None, "state": str(r.state) if r.state else None,
                   "cur_nimg": r.cur_nimg, "stopped": r.stopped, "done": r.done})


def spawn_training(nprocs: int, kwargs: Dict[str, Any]) -> TrainResult:
    """``--gpus N`` without torchrun (CUDA): one spawned process per device, as the official train.py does.
    SIGTERM/SIGINT to this process are forwarded to the workers (which save the state and exit)."""
    import torch.multiprocessing as mp

    ctx = mp.get_context("spawn")
    queue = ctx.SimpleQueue()
    pc = mp.start_processes(_spawn_entry, args=(nprocs, _free_port(), kwargs, queue), nprocs=nprocs, join=False,
                            start_method="spawn")

    def forward(signum, frame):
        for proc in pc.processes:
            if proc.is_alive():
                with contextlib.suppress(OSError):
                    os.kill(proc.pid, signum)

    previous = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            previous[sig] = signal.signal(sig, forward)
    try:
        while not pc.join():
            pass
    except mp.ProcessExitedException as e:
        raise StyleforgeError(f"training process {e.error_index} exited with code {e.exit_code} "
                              "(its message is above)") from None
    except mp.ProcessRaisedException as e:
        raise StyleforgeError(f"training process {e.error_index} failed:\n{e}") from None
    finally:
        for sig, h in previous.items():
            signal.signal(sig, h)
    if queue.empty():
        raise StyleforgeError("training processes finished without a result")
    r = queue.get()
    return TrainResult(run_dir=Path(r["run_dir"]) if r["run_dir"] else None,
                       options=TrainingOptions.from_dict(r["options"]),
                       snapshot=Path(r["snapshot"]) if r["snapshot"] else None,
                       state=Path(r["state"]) if r["state"] else None, cur_nimg=r["cur_nimg"], stopped=r["stopped"],
                       done=r["done"])


def _train(outdir, data, settings: TrainSettings, dist: DistInfo, log: _Logger, *, overrides, step_callback,
           snapshot_callback, handle_signals, dry_run) -> TrainResult:
    from .. import zoo

    s, resume = settings, settings.resume

    outdir = Path(outdir)
    data_path = Path(data)
    data_abs = str(data_path.resolve()) if data_path.exists() else str(data_path)
    probe = open_dataset(data_abs, cond=True)  # labels are checked below, whatever --cond says

    # Decide what to resume from (rank 0 decides; every process follows).
    decision: Dict[str, Any] = {"error": None, "state": None, "network": None, "run_dir": None}
    if dist.is_main:
        try:
            if resume == "auto":
                d = find_auto_resume(outdir, data_abs, s.cfg)
                if d is not None:
                    decision.update(state=str(d / STATE_NAME), run_dir=str(d))
            elif resume:
                rp = Path(resume)
                if rp.is_dir() and (rp / STATE_NAME).is_file():
                    rp = rp / STATE_NAME
                if not rp.exists():
                    from .. import zoo

                    rp = zoo.resolve(str(resume))
                decision["state" if is_state_file(rp) else "network"] = str(rp)
        except StyleforgeError as e:
            decision["error"] = str(e)
    decision = dist.broadcast_object(decision)
    if decision["error"]:
        raise StyleforgeError(decision["error"])

    state = None
    bundle = None
    if decision["state"]:
        state = load_state_file(Path(decision["state"]), map_location=dist.device)
        opts = TrainingOptions.from_dict(json.loads(state["options"]))
        if opts.gpus != dist.world:
            if opts.batch % dist.world:
                raise StyleforgeError(f"the resumed run has batch {opts.batch}, not divisible by {dist.world} processes")
            opts.batch_gpu = min(opts.batch_gpu, opts.batch // dist.world)
            if (opts.batch // dist.world) % opts.batch_gpu:
                opts.batch_gpu = opts.batch // dist.world
            log(f"note: resuming a {opts.gpus}-process run with {dist.world}; the result will not be bit-identical")
            opts.gpus = dist.world
        g_cfg = opts.G
        _check_data_matches(g_cfg["img_resolution"], g_cfg["img_channels"], g_cfg.get("c_dim", 0), probe, opts.cond,
                            "the resumed network")
        opts.data = data_abs
        for k in ("kimg", "snap", "kimg_per_tick"):
            if getattr(s, k) is not None:
                setattr(opts, k, getattr(s, k))
                if k == "snap":
                    opts.image_snap = s.snap
        opts.workers, opts.device, opts.deterministic = s.workers, s.device, s.deterministic
        opts.fp16 = dist.device.type == "cuda" and not s.fp32
        opts.metrics = []
    else:
        opts = resolve_options(
            data=data_abs, dataset_name=probe.name, resolution=probe.resolution, num_channels=probe.num_channels,
            num_images=len(probe) * (2 if s.mirror else 1), label_dim=probe.label_dim, gpus=dist.world,
            fp16=dist.device.type == "cuda" and not s.fp32, settings=s,
            resume=resume if (resume == "auto" or decision["network"]) else None)
        if dist.device.type == "cpu" and opts.grid[0] * opts.grid[1] > 64:
            # the official grid (up to 32x32 images) takes minutes per snapshot on a CPU; 8x8 is plenty there
            opts.grid = (min(opts.grid[0], 8), min(opts.grid[1], 8))
        if overrides:
            opts = TrainingOptions.from_dict(_deep_update(opts.to_dict(), overrides))
        if decision["network"]:
            bundle = zoo.load_networks(decision["network"], roles=None)
            gen = bundle.networks.get("G") or bundle.networks.get("G_ema")
            if gen is None or not hasattr(gen, "mapping"):
                raise StyleforgeError(f"{decision['network']}: has no StyleGAN2 generator to fine-tune")
            _check_data_matches(gen.img_resolution, gen.img_channels, gen.c_dim, probe, opts.cond, "the --resume network")
            # Fine-tuning trains the file's architecture; the preset supplies the training hyper-parameters.
            opts.G = gen.config.to_dict()
            if "D" in bundle.networks:
                d_cfg = bundle.networks["D"].config.to_dict()
                d_cfg["mbstd_group_size"] = opts.D.get("mbstd_group_size", d_cfg.get("mbstd_group_size"))
                opts.D = d_cfg
            else:
                opts.D = _deep_update(opts.D, {"img_resolution": gen.img_resolution, "img_channels": gen.img_channels,
                                               "c_dim": gen.c_dim})
    probe.close()

    if dry_run:
        log("Training options:")
        log(opts.to_json())
        where = decision["run_dir"] or str(outdir / f"NNNNN-{opts.desc}")
        log(f"Output directory: {where}")
        log(f"Dataset: {opts.data} ({opts.num_images} images, {opts.resolution}x{opts.resolution}, "
            f"{opts.label_dim} label dims)")
        log("Dry run; exiting.")
        return TrainResult(run_dir=None, options=opts)

    # Run directory (rank 0 creates it; errors reach every process).
    made: Dict[str, Any] = {"error": None, "run_dir": decision["run_dir"]}
    if dist.is_main:
        try:
            if made["run_dir"] is None:
                made["run_dir"] = str(make_run_dir(outdir, opts.desc))
            ensure_outdir(made["run_dir"])
        except StyleforgeError as e:
            made["error"] = str(e)
    made = dist.broadcast_object(made)
    if made["error"]:
        raise StyleforgeError(made["error"])
    run_dir = Path(made["run_dir"])
    opts.run_dir = str(run_dir)
    if dist.is_main:
        log.open(run_dir / "log.txt")
        if not (run_dir / "training_options.json").exists():
            save_json(run_dir / "training_options.json", opts.to_dict())
        if state is not None:
            _truncate_stats(run_dir / "stats.jsonl", int(state["progress"]["cur_nimg"]) / 1000)
            log(f"resuming from {decision['state']} at {int(state['progress']['cur_nimg']) / 1000:g} kimg "
                "(all settings except --kimg, --snap, --kimg-per-tick, --workers and --device come from the state)")
        if bundle is not None:
            log(f"fine-tuning from {decision['network']}")

    trainer = Trainer(opts, dist, run_dir=run_dir, log=log, step_callback=step_callback,
                      snapshot_callback=snapshot_callback)
    if state is not None:
        trainer.load_state_dict(state)
        del state
    elif bundle is not None:
        trainer.load_networks_from(bundle)
    trainer.broadcast_weights()
    ctx = _stop_on_signals(trainer.stop, log) if handle_signals else contextlib.nullcontext()
    with ctx:
        res = trainer.run()
    return TrainResult(run_dir=run_dir, options=opts, snapshot=res.get("snapshot"), state=res.get("state"),
                       cur_nimg=res.get("cur_nimg", trainer.cur_nimg), stopped=res.get("stopped", False),
                       done=res.get("done", False), rank=dist.rank)


def _truncate_stats(path: Path, kimg: float) -> None:
    """Drop stats.jsonl lines written after the resumed point (a hard kill loses them from the state)."""
    if not path.is_file():
        return
    keep = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line)["Progress/kimg"]["mean"] > kimg + 1e-9:
                continue
        except (ValueError, KeyError, TypeError):
            pass
        keep.append(line)
    with atomic_path(path) as tmp:
        tmp.write_text("".join(x + "\n" for x in keep))
