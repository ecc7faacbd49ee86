"""Multi-process training plumbing: torchrun's environment -> process group, ranks, reductions, sharding.

torchrun (and SageMaker's PyTorch container with `torch_distributed` on several instances) sets WORLD_SIZE,
RANK, LOCAL_RANK, MASTER_ADDR and MASTER_PORT; with WORLD_SIZE > 1 we join a process group (nccl on CUDA,
gloo on CPU). A single process needs none of it and every helper here degrades to a no-op.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.utils.data import Sampler


@dataclass(frozen=True)
class DistInfo:
    world_size: int = 1
    rank: int = 0
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def dist_info_from_env() -> DistInfo:
    return DistInfo(
        world_size=int(os.environ.get("WORLD_SIZE", "1")),
        rank=int(os.environ.get("RANK", "0")),
        local_rank=int(os.environ.get("LOCAL_RANK", "0")),
    )


def init_distributed(device: torch.device) -> DistInfo:
    """Join the process group when WORLD_SIZE > 1; returns this process's place in it."""
    info = dist_info_from_env()
    if info.enabled and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, init_method="env://")
    return info


def cleanup_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(tensor: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Sum a tensor over all ranks, in place (no-op in a single process)."""
    if info.enabled:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def broadcast_buffers(model: torch.nn.Module, info: DistInfo) -> None:
    """Copy rank 0's buffers (BatchNorm running statistics) to every rank; DDP syncs them only before forward."""
    if info.enabled:
        with torch.no_grad():
            for buffer in model.buffers():
                dist.broadcast(buffer, src=0)


class ShardSampler(Sampler[int]):
    """Every world_size-th index from rank: each sample on exactly one rank, none repeated.

    DistributedSampler pads the dataset to a multiple of the world size with repeated samples, which would
    count some validation photos twice; evaluation uses this instead so reduced metrics equal single-process ones.
    """

    def __init__(self, length: int, info: DistInfo) -> None:
        self.indices = range(info.rank, length, info.world_size)

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)
