"""Data-parallel training under ``torchrun`` (gloo on CPU, NCCL on GPU).

Distillery shards the *global batch*: every rank builds the same sequence of global batches (same data
order, same seed) and takes rows ``rank::world_size`` of each. A run with N processes and per-rank batch
b therefore sees exactly the batches of a 1-process run with batch N*b, so loss trajectories match.
Gradients are summed across ranks with one coalesced ``all_reduce`` per optimizer step, after all
micro-batches (the data-parallel contract of DDP, without its forward wrapper, because the trainer calls
``Student.run`` for hidden states and the chunked loss).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor


@dataclass(frozen=True)
class DistInfo:
    """This process's place in the job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed() -> DistInfo:
    """Join the process group when launched by ``torchrun`` (``WORLD_SIZE`` > 1); otherwise single process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    rank = int(os.environ["RANK"])
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend=backend)
    return DistInfo(rank=rank, world_size=world, local_rank=local)


def shard_batch(batch: dict[str, Tensor], info: DistInfo) -> dict[str, Tensor]:
    """Rows ``rank::world_size`` of a collated global batch; ``num_target_tokens`` recounted."""
    if not info.enabled:
        return batch
    out = {k: (v[info.rank::info.world_size] if isinstance(v, Tensor) and v.dim() > 0 else v)
           for k, v in batch.items()}
    out["num_target_tokens"] = (out["labels"] != -100).sum()
    return out


def all_reduce_sum_(values: list[Tensor], info: DistInfo) -> None:
    """In-place sum of tensors across ranks, coalesced into one flat buffer."""
    if not info.enabled or not values:
        return
    flat = torch.cat([v.reshape(-1) for v in values])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    offset = 0
    for v in values:
        n = v.numel()
        v.copy_(flat[offset:offset + n].view_as(v))
        offset += n


def all_reduce_gradients_(parameters: list[torch.nn.Parameter], info: DistInfo) -> None:
    """Sum every parameter's gradient across ranks (missing gradients count as zeros)."""
    if not info.enabled:
        return
    for p in parameters:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    all_reduce_sum_([p.grad for p in parameters], info)  # type: ignore[misc]


def global_sum(value: float, info: DistInfo) -> float:
    """A Python float summed across ranks."""
    if not info.enabled:
        return value
    t = torch.tensor([value], dtype=torch.float64)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return float(t.item())


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def shutdown(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()


def fully_shard_student(student: torch.nn.Module) -> None:
    """Shard a student with PyTorch FSDP2 (``torch.distributed.fsdp.fully_shard``): every decoder layer is
    its own unit (gathered for its forward/backward, freed after), the root holds embeddings, final norm
    and head. FSDP averages gradients over ranks; the trainer normalizes every loss by the global
    target-token count, so it multiplies the reduced gradients by the world size (exact for powers of two) to
    get the summed, single-process gradient, as the data-parallel all-reduce does. (A divide factor of 1
    would need ReduceOp.PREMUL_SUM, which gloo lacks.) Works with gloo on CPU and NCCL on GPU."""
    from torch.distributed.fsdp import fully_shard, register_fsdp_forward_method

    for layer in student.model.layers:  # type: ignore[union-attr]
        fully_shard(layer)
    fully_shard(student)
    # the trainer calls Student.run (hidden states, chunked loss), not forward: gather the root around it too
    register_fsdp_forward_method(student, "run")


def fsdp_full_copies(student: torch.nn.Module, optimizer: torch.optim.Optimizer | None,
                     cfg: object) -> tuple[torch.nn.Module | None, torch.optim.Optimizer | None]:
    """Full (unsharded, CPU) copies of an FSDP student and its optimizer on rank 0 (None elsewhere), for
    checkpoints and artifacts in the single-process format. A collective: every rank must call it."""
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        get_model_state_dict,
        get_optimizer_state_dict,
        set_optimizer_state_dict,
    )

    from training.kd.optim import build_optimizer
    from training.model import Student

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    model_state = get_model_state_dict(student, options=options)
    optim_state = get_optimizer_state_dict(student, optimizer, options=options) if optimizer is not None else None
    if dist.get_rank() != 0:
        return None, None
    full = Student(student.config)  # type: ignore[arg-type]
    full.load_state_dict(model_state)
    full_optim = None
    if optimizer is not None:
        full_optim = build_optimizer(full, cfg)  # type: ignore[arg-type]
        set_optimizer_state_dict(full, full_optim, optim_state,  # type: ignore[arg-type]
                                 options=StateDictOptions(full_state_dict=True))
        for group, live in zip(full_optim.param_groups, optimizer.param_groups, strict=True):
            group["lr"] = live["lr"]
    return full, full_optim


def fsdp_load_full_state(student: torch.nn.Module, optimizer: torch.optim.Optimizer, full: torch.nn.Module,
                         full_optimizer: torch.optim.Optimizer) -> None:
    """Load a full (unsharded) student and optimizer state, as a single-process checkpoint holds them, into an
    FSDP student and its optimizer: every rank keeps its shard of the parameters and of the Adam moments.
    Every rank must call it with the same full state (each reads the checkpoint itself)."""
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        get_optimizer_state_dict,
        set_model_state_dict,
        set_optimizer_state_dict,
    )

    options = StateDictOptions(full_state_dict=True)
    set_model_state_dict(student, full.state_dict(), options=options)  # type: ignore[arg-type]
    optim_state = get_optimizer_state_dict(full, full_optimizer, options=options)
    set_optimizer_state_dict(student, optimizer, optim_state, options=options)
    for group, saved in zip(optimizer.param_groups, full_optimizer.param_groups, strict=True):
        group["lr"] = saved["lr"]
