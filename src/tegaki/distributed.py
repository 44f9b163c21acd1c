"""Training in several processes (and machines) with PyTorch DistributedDataParallel.

    tegaki train --preset best --nproc 2                      # N processes on this machine
    torchrun --nproc-per-node 2 -m tegaki train --preset best   # the same, launched by torchrun
    (across machines: see docs/distributed.md)

How it fits the shared loop (train.py):
  - every process loads the data and draws the same seeded permutation each epoch; each global
    batch perm[b*B:(b+1)*B] is split between the ranks (`Dist.shard`), so a step of N processes
    sees the same B examples as a step of one process, and DDP averages the gradients: the
    learning rate, schedule and number of steps do not change with N;
  - gloo on CPUs, NCCL on GPUs (one GPU per process: cuda:LOCAL_RANK);
  - rank 0's parameters and batch-norm statistics are broadcast before every evaluation, so all
    ranks see the same validation loss and take the same early-stopping decisions;
  - only rank 0 prints, writes checkpoints and the run folder.

`launch` is what `--nproc N` does: it starts N copies of the same `tegaki train` command with
the environment torchrun would give them (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT).
"""

from __future__ import annotations

import gc
import json
import signal
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass

import numpy as np

from tegaki.errors import TegakiError

ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    local_world: int = 1
    backend: str | None = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shard(self, idx: np.ndarray) -> np.ndarray:
        """This rank's part of a global batch of indices (every world-th one, from `rank`)."""
        return idx[self.rank::self.world] if self.world > 1 else idx

    def wrap(self, engine) -> None:
        """Train the engine's network through DistributedDataParallel (torch engine only)."""
        if self.world == 1:
            return
        if getattr(engine, "name", "") != "torch":
            raise TegakiError("training in several processes needs the torch engine; drop --engine")
        import torch
        from torch.nn.parallel import DistributedDataParallel as DDP

        dev = engine.device
        ids = [dev.index if dev.index is not None else torch.cuda.current_device()] if dev.type == "cuda" else None
        engine.train_net = DDP(engine.net, device_ids=ids)

    def sync(self, engine) -> None:
        """Give every rank rank 0's parameters and buffers (batch-norm statistics)."""
        if self.world == 1:
            return
        import torch.distributed as td

        for t in engine.net.state_dict().values():
            td.broadcast(t, 0)

    def agree(self, value: float) -> float:
        """Rank 0's value of a number, on every rank."""
        if self.world == 1:
            return value
        import torch
        import torch.distributed as td

        dev = "cuda" if self.backend == "nccl" else "cpu"
        t = torch.tensor([value], dtype=torch.float64, device=dev)
        td.broadcast(t, 0)
        return float(t.item())

    def close(self) -> None:
        if self.world > 1:
            import torch.distributed as td

            if td.is_initialized():
                # wait for every rank (rank 0 still measures the test set and writes the run): a rank
                # that tears down while another still holds the connection can abort the other one
                td.barrier()
                # free what still holds the group (a finished run's DistributedDataParallel wrapper sits in
                # reference cycles) now, not at interpreter exit, where gloo's threads can abort the process
                gc.collect()
                td.destroy_process_group()


def setup(env: dict, device: str = "auto") -> Dist:
    """A Dist from torchrun-style environment variables; world 1 (no-op) when they are absent."""
    if "WORLD_SIZE" not in env or int(env.get("WORLD_SIZE", "1")) <= 1:
        return Dist()
    import torch
    import torch.distributed as td

    try:
        rank, world = int(env["RANK"]), int(env["WORLD_SIZE"])
        local_rank = int(env.get("LOCAL_RANK", rank))
        local_world = int(env.get("LOCAL_WORLD_SIZE", world))
    except (KeyError, ValueError) as e:
        raise TegakiError(f"distributed launch: bad or missing environment variable ({e}); "
                          "launch with torchrun or tegaki train --nproc N") from None
    cuda = device in ("auto", "cuda") and torch.cuda.is_available()
    if device == "cuda" and not cuda:
        raise TegakiError("--device cuda: no CUDA GPU is available to PyTorch here; use --device cpu or auto")
    backend = "nccl" if cuda else "gloo"
    if cuda:
        if local_rank >= torch.cuda.device_count():
            raise TegakiError(f"process {local_rank} has no GPU of its own ({torch.cuda.device_count()} visible); "
                              "use fewer processes per machine")
        torch.cuda.set_device(local_rank)
    else:  # share this machine's cores between its processes
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // max(1, local_world)))
    td.init_process_group(backend=backend, rank=rank, world_size=world)
    return Dist(rank, world, local_rank, local_world, backend)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def strip_nproc(argv: list[str]) -> list[str]:
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == "--nproc":
            skip = True
        elif not a.startswith("--nproc="):
            out.append(a)
    return out


def launch(nproc: int, argv: list[str], env: dict) -> int:
    """Run `tegaki <argv>` (without --nproc) in `nproc` processes on this machine; rank 0 prints.

    Returns the first non-zero exit status of a process, else 0.
    """
    if nproc < 1:
        raise TegakiError(f"--nproc must be at least 1, got {nproc}")
    if "WORLD_SIZE" in env:
        raise TegakiError("--nproc inside a distributed launch (torchrun); give one or the other")
    args = [sys.executable, "-m", "tegaki", *strip_nproc(argv)]
    base = {**{k: v for k, v in env.items() if k not in ENV}, "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(free_port()), "WORLD_SIZE": str(nproc), "LOCAL_WORLD_SIZE": str(nproc),
            "TEGAKI_LAUNCH_ARGV": json.dumps(list(argv))}
    procs: list[subprocess.Popen] = []
    first_failure: list[int] = []  # the exit status of the process that failed first, in time
    previous = _forward_sigterm(procs, first_failure)
    try:
        for r in range(nproc):
            e = {**base, "RANK": str(r), "LOCAL_RANK": str(r)}
            procs.append(subprocess.Popen(args, env=e, stdout=None if r == 0 else subprocess.DEVNULL))
        _watch(procs, first_failure)
    except KeyboardInterrupt:  # the processes got the Ctrl-C too; rank 0 saves a checkpoint
        for p in procs:
            p.wait()
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    codes = [p.wait() for p in procs]
    if first_failure:
        return first_failure[0]
    return next((c for c in codes if c > 0), next((c for c in codes if c), 0))


GRACE = 20.0  # seconds the processes get to stop after a SIGTERM before they are killed


def _watch(procs: list, first_failure: list) -> None:
    """Wait for every process; when one fails, stop the others (they would wait for it forever)."""
    stopping_since = None
    while [p.poll() for p in procs].count(None):  # poll every one (any() would stop at the first running)
        if first_failure == [128 + signal.SIGTERM]:
            stopping_since = stopping_since or time.monotonic()
            if time.monotonic() - stopping_since > GRACE:
                for p in procs:
                    if p.poll() is None:
                        p.kill()
        failed = [p.returncode for p in procs if p.returncode not in (None, 0)]
        if failed and first_failure != [128 + signal.SIGTERM]:  # (after a SIGTERM, each stops by itself)
            if not first_failure:
                first_failure.append(failed[0] if failed[0] > 0 else 128 - failed[0])
            for p in procs:
                if p.poll() is None:
                    p.terminate()
        time.sleep(0.1)


def _forward_sigterm(procs: list, first_failure: list):
    """SIGTERM to the launcher goes to every process (rank 0 keeps its checkpoint); the launch ends 143."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        return None

    def forward(signum, frame):
        first_failure[:] = [128 + signal.SIGTERM]
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)

    return signal.signal(signal.SIGTERM, forward)
