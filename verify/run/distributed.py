"""Scale-out of a sweep over processes started by torchrun: one device per rank, one report.

Work is split by whole batches (batch b runs on rank b mod world_size), so every batch holds the
same frames and noise rows whatever the number of ranks; rank 0 gathers every frame's actions
through torch.distributed in frame order and computes the statistics once. On the same kind of
device and the same intra-op thread count, the numbers equal a single-process run bit for bit.

Backends: gloo on CPU; with an accelerator `cpu:gloo,cuda:nccl` or `cpu:gloo,npu:hccl`, so small
control messages (error agreement, hashes, timings) go over gloo and the action tensors over the
accelerator's own collective library. A failure on any rank is agreed on by all ranks, which then
raise the same kind of error, so every rank exits with the same code.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from verify_ate.verify.errors import EXIT_BAD_INPUT, EXIT_PASS, DeviceUnavailableError, InputError, exit_code

MESSAGE_BYTES = 1024  # one failure message per rank travels in a fixed-size byte row


def wait_until_released(tensor, timeout_s: float = 10.0) -> None:
    """Return once no collective still holds `tensor` (its C++ use count is back to this one reference).

    gloo wakes the caller when a collective completes, but its worker thread drops the finished work,
    and with it the tensor, a moment later, and that drop takes the GIL to release the tensor's Python
    object. After the last collective of a run the interpreter may already be finalizing by then: the
    worker thread is stopped inside a destructor and the rank dies with SIGABRT ("terminate called
    without an active exception", exit -6) after its run succeeded. Sleeping hands the worker the GIL;
    the count drops just before the worker asks for it, hence one more short sleep at the end.
    """
    deadline = time.monotonic() + timeout_s
    while tensor._use_count() > 1 and time.monotonic() < deadline:
        time.sleep(0.001)
    time.sleep(0.01)


def torchrun_world() -> tuple[int, int, int]:
    """(rank, world_size, local_rank) from torchrun's environment; (0, 1, 0) without it."""
    try:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local_rank = int(os.environ.get("LOCAL_RANK", str(rank)))
    except ValueError as error:
        raise InputError(f"torchrun environment: {error}") from None
    return rank, max(world, 1), local_rank


def rank_device(spec: str, local_rank: int, world_size: int) -> str:
    """The device of this rank: `cuda`/`npu` without an index become `cuda:LOCAL_RANK`/`npu:LOCAL_RANK`
    under torchrun; an explicit index and `cpu` stay as written."""
    from verify_ate.verify.model.devices import parse_device

    parsed = parse_device(spec)
    if world_size > 1 and parsed.backend in ("cuda", "npu") and parsed.index is None:
        return f"{parsed.backend}:{local_rank}"
    return str(parsed)


def backend_for(device_specs) -> tuple[str, str]:
    """(torch.distributed backend string, accelerator kind or 'cpu') for the sides' devices."""
    from verify_ate.verify.model.devices import parse_device

    kinds = {parse_device(spec).backend for spec in device_specs}
    if "npu" in kinds:
        return "cpu:gloo,npu:hccl", "npu"
    if "cuda" in kinds:
        return "cpu:gloo,cuda:nccl", "cuda"
    return "gloo", "cpu"


def batch_owners(n_batches: int, world_size: int) -> list[int]:
    """The rank that runs each batch: batch b on rank b mod world_size, so every batch holds the same frames
    and noise rows whatever the number of ranks."""
    return [batch % world_size for batch in range(n_batches)]


def batches_of_rank(n_batches: int, rank: int, world_size: int) -> list[int]:
    """The batches `rank` runs (see `batch_owners`)."""
    return [batch for batch, owner in enumerate(batch_owners(n_batches, world_size)) if owner == rank]


@dataclass
class Group:
    """This process's place among the ranks; world_size 1 is a plain single-process run."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None
    data_device: str = "cpu"  # where tensors for the data collectives live
    startup_error: BaseException | None = None  # this rank's device was not there (see start_group)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    # -------------------------------------------------------- control plane (CPU tensors, gloo)

    def barrier(self) -> None:
        """A CPU all-reduce over gloo: the same on every backend mix (nccl's barrier guesses a device)."""
        if self.distributed:
            import torch
            import torch.distributed as dist

            token = torch.zeros(1)
            dist.all_reduce(token)
            wait_until_released(token)

    def agree(self, error: BaseException | None) -> None:
        """Every rank calls this at the same point; if any rank failed, every rank raises.

        The failing rank re-raises its own error; the others raise InputError or
        DeviceUnavailableError (same exit code) naming the first failing rank and its message.
        """
        if not self.distributed:
            if error is not None:
                raise error
            return
        import torch
        import torch.distributed as dist

        message = np.zeros(MESSAGE_BYTES, dtype=np.uint8)
        text = f"{type(error).__name__}: {error}".encode()[:MESSAGE_BYTES] if error is not None else b""
        message[: len(text)] = np.frombuffer(text, dtype=np.uint8)
        code = 0 if error is None else exit_code(error)
        row = torch.from_numpy(np.concatenate([[code], message]).astype(np.int32))
        rows = [torch.zeros_like(row) for _ in range(self.world_size)]
        dist.all_gather(rows, row)
        failed = [(rank, int(r[0])) for rank, r in enumerate(rows) if int(r[0]) != 0]
        if not failed:
            return
        if error is not None:
            raise error
        rank, code = failed[0]
        peer = bytes(rows[rank][1:].numpy().astype(np.uint8)).rstrip(b"\0").decode("utf-8", "replace")
        kind = InputError if code == EXIT_BAD_INPUT else DeviceUnavailableError
        raise kind(f"rank {rank} of {self.world_size} failed: {peer}")

    def main_first(self, work: Callable[[], Any]) -> Any:
        """`work()` on rank 0, then on the other ranks (what it writes once, a demo's dataset and checkpoint, is
        there when they start); a failure on any rank is agreed on by all (`agree`)."""
        result = None
        for turn in (True,) if not self.distributed else (True, False):
            error = None
            if self.is_main == turn:
                try:
                    result = work()
                except Exception as caught:  # agreed on below, re-raised on this rank
                    error = caught
            self.agree(error)
        return result

    def main_only(self, work: Callable[[], int]) -> int:
        """`work()` (judging, publishing) on rank 0; its exit code, or its error, is every rank's."""
        code, error = EXIT_PASS, None
        if self.is_main:
            try:
                code = work()
            except Exception as caught:  # agreed on by every rank
                error = caught
        self.agree(error)
        return self.broadcast_int(code)

    def broadcast_int(self, value: int) -> int:
        """Rank 0's value on every rank (the exit code)."""
        if not self.distributed:
            return value
        import torch
        import torch.distributed as dist

        box = torch.tensor([value if self.is_main else 0], dtype=torch.int64)
        dist.broadcast(box, src=0)
        return int(box.item())

    def gather_control(self, values: np.ndarray) -> np.ndarray:
        """A small fixed-shape float64/uint8 array from every rank: [world_size, *shape] (gloo)."""
        values = np.ascontiguousarray(values)
        if not self.distributed:
            return values[None]
        import torch
        import torch.distributed as dist

        tensor = torch.from_numpy(values.copy())
        rows = [torch.zeros_like(tensor) for _ in range(self.world_size)]
        dist.all_gather(rows, tensor)
        return np.stack([row.numpy() for row in rows])

    # -------------------------------------------------------- data plane (the rank's device)

    def gather_rows(
        self, local: dict[int, np.ndarray], owners: list[list[int]], row_shape: tuple, dtype, control: bool = False
    ) -> np.ndarray:
        """Rows (one per sweep frame) held by the ranks -> [n_units, *row_shape] in unit order.

        owners[r]: the unit indices rank r holds, in the order it packs them. The bytes travel
        unchanged (float32 through gloo/nccl/hccl is a copy), so rank 0 sees exactly what each rank
        computed. `control`: send over the CPU (gloo) group whatever the data device.
        """
        n_units = sum(len(units) for units in owners)
        mine = owners[self.rank]
        packed = np.zeros((max(1, max(len(units) for units in owners)), *row_shape), dtype=dtype)
        for slot, unit in enumerate(mine):
            packed[slot] = local[unit]
        if not self.distributed:
            gathered = [packed]
        else:
            import torch
            import torch.distributed as dist

            device = "cpu" if control else self.data_device
            tensor = torch.from_numpy(packed).to(device)
            rows = [torch.zeros_like(tensor) for _ in range(self.world_size)]
            dist.all_gather(rows, tensor)
            gathered = [row.to("cpu").numpy() for row in rows]
        result = np.zeros((n_units, *row_shape), dtype=dtype)
        for rank, units in enumerate(owners):
            for slot, unit in enumerate(units):
                result[unit] = gathered[rank][slot]
        return result

    def close(self) -> None:
        """Leave together: torchrun stops the remaining ranks as soon as one exits with an error,
        so ranks that agreed on a code meet once more and exit at the same moment."""
        if self.distributed:
            import torch.distributed as dist

            if dist.is_initialized():
                try:
                    self.barrier()
                except Exception:  # a peer that is already gone cannot be waited for
                    pass
                dist.destroy_process_group()


def on_ranks(device_specs, work: Callable[[Group], int]) -> int:
    """`work(group)` in this process, or on every torchrun rank, the group started before and closed after (its
    startup error agreed on first); returns the exit code."""
    group = start_group(device_specs)
    try:
        group.agree(group.startup_error)
        return work(group)
    finally:
        group.close()


def start_group(device_specs) -> Group:
    """The process group of this run: a single-process Group, or torch.distributed under torchrun.

    The rank's accelerator is checked after the group exists, so that a rank without its device
    (8 ranks on a 4-GPU host) is agreed on by all ranks (exit 3 everywhere) instead of leaving the
    others waiting; call `group.agree(group.startup_error)` first thing.
    """
    rank, world_size, local_rank = torchrun_world()
    if world_size <= 1:
        return Group()
    import datetime

    import torch
    import torch.distributed as dist

    backend, accelerator = backend_for(device_specs)
    data_device = "cpu" if accelerator == "cpu" else f"{accelerator}:{local_rank}"
    if accelerator != "cpu":
        from verify_ate.verify.model.devices import resolve_device

        # The backend at all (no CUDA GPU, no torch_npu, which also registers hccl): every rank
        # fails alike here, exit 3 with the device's own message, before any collective.
        resolve_device(accelerator)
    if not dist.is_initialized():
        # Long enough for the slowest rank to load a full-size checkpoint between two collectives.
        dist.init_process_group(
            backend=backend, rank=rank, world_size=world_size, timeout=datetime.timedelta(minutes=60)
        )
    group = Group(rank, world_size, local_rank, backend, data_device)
    if accelerator != "cpu":
        try:
            from verify_ate.verify.model.devices import resolve_device

            resolve_device(data_device)
            getattr(torch, accelerator).set_device(local_rank)
        except Exception as error:  # agreed on by every rank
            group.startup_error = error
    return group
