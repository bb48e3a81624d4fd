"""Process-group helpers: start from torchrun's environment, ask for rank and world size, gather features.

Nothing here keeps module-global state: every helper asks ``torch.distributed`` itself, so code that runs
in one process (tests, CPU demo) and under ``torchrun`` reads the same.
"""
from __future__ import annotations

import datetime
import os
from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_fn

from mmgeolm_core.errors import InputError

TORCHRUN_KEYS = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


@dataclass(frozen=True)
class DistEnv:
    """Where this process sits in the job.

    Attributes:
        rank: global rank.
        world_size: number of processes.
        local_rank: rank on this node (selects the GPU).
        backend: ``"gloo"``/``"nccl"`` when a process group is up, None for a single process.
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def read_torchrun_env(environ: Mapping[str, str] | None = None) -> DistEnv:
    """Parse ``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` as set by ``torchrun``; a plain process is rank 0 of 1.

    Raises:
        ValueError: a variable is not an integer, or the values are inconsistent.
    """
    environ = os.environ if environ is None else environ
    values: dict[str, int] = {}
    for key, default in zip(TORCHRUN_KEYS, (0, 1, 0)):
        raw = environ.get(key)
        try:
            values[key] = default if raw in (None, "") else int(raw)
        except ValueError as exc:
            raise ValueError(f"environment variable {key}={raw!r} must be an integer (as set by torchrun)") from exc
    rank, world, local = values["RANK"], values["WORLD_SIZE"], values["LOCAL_RANK"]
    if world < 1 or not 0 <= rank < world or local < 0:
        raise ValueError(f"inconsistent torchrun environment: RANK={rank}, WORLD_SIZE={world}, LOCAL_RANK={local}")
    return DistEnv(rank=rank, world_size=world, local_rank=local)


def init_distributed(
    backend: str | None = None,
    init_method: str = "env://",
    timeout_s: float = 1800.0,
    environ: Mapping[str, str] | None = None,
) -> DistEnv:
    """Join the process group described by torchrun's environment (no-op for a single process).

    Args:
        backend: ``"nccl"`` or ``"gloo"``; None picks NCCL when CUDA is available, gloo otherwise.
        init_method: ``torch.distributed`` rendezvous URL (``env://`` reads ``MASTER_ADDR``/``MASTER_PORT``).
        timeout_s: collective timeout.
        environ: environment to read instead of ``os.environ`` (tests).

    Returns:
        The process's :class:`DistEnv`. Under NCCL the current CUDA device is set to ``local_rank``.
    """
    env = read_torchrun_env(environ)
    if env.world_size == 1:
        return env
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(env.local_rank)
    if not dist.is_initialized():
        dist.init_process_group(
            backend=backend,
            init_method=init_method,
            rank=env.rank,
            world_size=env.world_size,
            timeout=datetime.timedelta(seconds=timeout_s),
        )
    return DistEnv(rank=env.rank, world_size=env.world_size, local_rank=env.local_rank, backend=dist.get_backend())


def is_distributed() -> bool:
    """True when a process group with more than one process is up."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def get_rank() -> int:
    """Global rank (0 without a process group)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def get_world_size() -> int:
    """Number of processes (1 without a process group)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """``auto`` / ``cpu`` / ``cuda`` -> a device: ``cuda:<local_rank>`` (under torchrun), else the CPU.

    Raises:
        InputError: ``cuda`` asked for where CUDA is not available.
    """
    if name == "cuda" and not torch.cuda.is_available():
        raise InputError("device cuda requested but CUDA is not available; use device cpu or auto")
    if name == "cpu" or (name == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    return torch.device("cuda", local_rank)


def barrier() -> None:
    """Wait for every rank (no-op without a process group)."""
    if is_distributed():
        dist.barrier()


def all_reduce_mean(tensor: torch.Tensor) -> torch.Tensor:
    """Mean of ``tensor`` over ranks (a detached copy; the input is untouched)."""
    out = tensor.detach().clone()
    if is_distributed():
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
        out /= get_world_size()
    return out


def destroy_distributed() -> None:
    """Leave the process group if one is up."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def gather_features(tensor: torch.Tensor, *, with_grad: bool = True) -> torch.Tensor:
    """Concatenate every rank's ``tensor`` along dim 0, in rank order.

    Every rank must pass the same shape (the samplers of :mod:`mmclip_plugin.sampler` give every rank
    the same batch size). Without a process group the tensor is returned as is.

    Args:
        tensor: (B, ...) local features.
        with_grad: keep the autograd graph across ranks: the backward pass sums every rank's gradient
            for this rank's slice (all_gather's adjoint). Without it, the other ranks' slices are
            constants and only the local slice carries gradient (open_clip's ``gather_with_grad=False``).

    Returns:
        (world_size * B, ...) tensor.
    """
    if not is_distributed():
        return tensor
    if with_grad and tensor.requires_grad:
        return torch.cat(dist_fn.all_gather(tensor), dim=0)
    parts = [torch.empty_like(tensor) for _ in range(get_world_size())]
    dist.all_gather(parts, tensor.detach().contiguous())
    parts[get_rank()] = tensor
    return torch.cat(parts, dim=0)


def gather_no_grad(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate every rank's ``tensor`` along dim 0 without autograd (masks, indices); bool is supported."""
    if not is_distributed():
        return tensor
    send = tensor.to(torch.uint8) if tensor.dtype == torch.bool else tensor
    parts = [torch.empty_like(send) for _ in range(get_world_size())]
    dist.all_gather(parts, send.contiguous())
    out = torch.cat(parts, dim=0)
    return out.bool() if tensor.dtype == torch.bool else out
