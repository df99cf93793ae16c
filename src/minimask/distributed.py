"""A pass over a data set shared by the processes ``torchrun`` starts (``torch.distributed``).

``torchrun --nproc_per_node=N -m minimask.evaluate ...`` starts N processes with ``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK`` (and ``MASTER_ADDR``/``MASTER_PORT``) in their environment;
``from_env`` reads them (``None`` without them: one process, as always).

The images are shared out by whole batches: batch k of the one-process pass (images
``k * batch_size`` to ``(k + 1) * batch_size - 1``) goes to rank ``k % world``
(``shard_indices``). A batch is padded to its largest image (``transform``), so an image's
detections depend on the images it is batched with; handing out whole batches keeps every
image in the batch it has in one process, and so its detections bit for bit. Each process
runs the model on its ``Shard`` (a view of the data set), and ``gather`` brings the
per-image records to rank 0, where ``merge`` puts them back in the data set's order: the
results, and every number computed from them, are those of one process with as many torch
threads (the number of threads changes the order in which oneDNN's convolutions add, hence
the last bit of a float32 score).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from minimask import cli

__all__ = [
    "Context",
    "Shard",
    "device_for",
    "from_env",
    "gather",
    "map_images",
    "merge",
    "shard_indices",
    "start",
    "stop",
]

ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


@dataclass(frozen=True)
class Context:
    """This process's place among the ``world`` processes torchrun started (``local_*``: on this machine)."""

    rank: int
    world: int
    local_rank: int
    local_world: int

    @property
    def main(self) -> bool:
        """Rank 0: the one process that prints and writes."""
        return self.rank == 0


def from_env(environ: dict[str, str] | None = None) -> Context | None:
    """The ``Context`` torchrun's environment variables describe; ``None`` when none of them is set.

    A ``cli.UserError`` when they are set but incomplete or inconsistent (a process started by
    hand with ``RANK`` but no ``MASTER_ADDR`` would otherwise wait for its peers forever).
    """
    env = os.environ if environ is None else environ
    if not any(k in env for k in ENV):
        return None
    need = [*ENV, "MASTER_ADDR", "MASTER_PORT"]
    missing = [k for k in need if k not in env]
    if missing:
        raise cli.UserError(f"{', '.join(ENV)} are set but {', '.join(missing)} not: start the processes "
                            "with torchrun (torch.distributed.run)")  # fmt: skip
    try:
        rank, world, local_rank = (int(env[k]) for k in ENV)
        local_world = int(env.get("LOCAL_WORLD_SIZE", world))
    except ValueError:
        raise cli.UserError(f"{', '.join(f'{k}={env[k]!r}' for k in ENV)}: not integers") from None
    if not (world >= 1 and 0 <= rank < world and 0 <= local_rank < local_world <= world):
        raise cli.UserError(f"RANK={rank}, WORLD_SIZE={world}, LOCAL_RANK={local_rank}: not a process of that world")
    return Context(rank, world, local_rank, local_world)


def device_for(device: str, ctx: Context | None, option: str = "--device") -> str:
    """The device of this process: ``device`` itself in one process; under torchrun, ``cuda``
    becomes ``cuda:LOCAL_RANK`` (one GPU per process, as NCCL needs); a ``cuda:N`` is refused
    when several processes share the machine (``cli.UserError``)."""
    dev = torch.device(device)
    if ctx is None or dev.type != "cuda":
        return device
    if dev.index is not None and ctx.local_world > 1:
        raise cli.UserError(f"{option} {device}: under torchrun give {option} cuda; process LOCAL_RANK uses "
                            "cuda:LOCAL_RANK")  # fmt: skip
    index = ctx.local_rank if dev.index is None else dev.index
    if index >= torch.cuda.device_count():
        raise cli.UserError(f"{option} {device}: process {ctx.local_rank} of {ctx.local_world} on this machine, "
                            f"but only {torch.cuda.device_count()} CUDA devices")  # fmt: skip
    return f"cuda:{index}"


def shard_indices(n: int, batch_size: int, rank: int, world: int) -> list[int]:
    """The data set indices of rank ``rank``'s share of ``n`` images: every ``world``-th batch
    of ``batch_size`` images, from batch ``rank``, in order. Batched again by ``batch_size``,
    they make exactly the batches the one-process pass makes of them (only the last batch of
    the data set may be short, and it is the last of its rank's)."""
    if batch_size < 1 or world < 1 or not 0 <= rank < world:
        raise ValueError(
            f"shard_indices: need batch_size >= 1 and 0 <= rank < world, got {batch_size}, {rank}, {world}"
        )
    starts = range(rank * batch_size, n, world * batch_size)
    return [i for s in starts for i in range(s, min(s + batch_size, n))]


def merge(parts: Sequence[Iterable[tuple[int, Any]]], n: int | None = None) -> list[Any]:
    """The records of every rank (each a list of ``(index, record)``) in index order; with
    ``n``, a ``ValueError`` unless the indices are exactly ``0..n-1``, each once."""
    pairs = sorted((pair for part in parts for pair in part), key=lambda pair: pair[0])
    indices = [i for i, _ in pairs]
    if n is not None and indices != list(range(n)):
        raise ValueError(f"merge: the records cover {len(set(indices))} distinct indices of 0..{n - 1} "
                         f"({len(indices)} records)")  # fmt: skip
    return [record for _, record in pairs]


class Shard:
    """The images ``indices`` of a ``CocoDataset``, as a data set of their own (item k is
    ``dataset[indices[k]]``); everything not indexed by item (classes, category ids, the
    annotation file) is the data set's."""

    def __init__(self, dataset, indices: Sequence[int]) -> None:
        self.dataset, self.indices = dataset, list(indices)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, k: int):
        return self.dataset[self.indices[k]]

    def image_info(self, k: int) -> dict:
        return self.dataset.image_info(self.indices[k])

    def annotations(self, k: int) -> list[dict]:
        return self.dataset.annotations(self.indices[k])

    def load_image(self, k: int):
        return self.dataset.load_image(self.indices[k])

    def __getattr__(self, name: str):
        if name in ("dataset", "indices"):  # not set yet (unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.dataset, name)


def start(ctx: Context, device: str, threads: int | None = None) -> None:
    """Join the process group: NCCL when ``device`` is a CUDA device, else gloo. Each process
    gets ``threads`` torch threads, by default ``max(1, cpus // local_world)`` (torchrun sets
    ``OMP_NUM_THREADS=1``, which would leave cores idle)."""
    import torch.distributed as dist

    if threads is None:
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        threads = max(1, cpus // ctx.local_world)
    torch.set_num_threads(threads)
    cuda = torch.device(device).type == "cuda"
    if cuda:
        torch.cuda.set_device(torch.device(device))
    dist.init_process_group("nccl" if cuda else "gloo", rank=ctx.rank, world_size=ctx.world)


def stop() -> None:
    """Leave the process group (if this process joined one)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def gather(obj: Any, ctx: Context) -> list[Any] | None:
    """Every rank's ``obj`` on rank 0 (a list by rank), ``None`` on the others (``gather_object``)."""
    import torch.distributed as dist

    parts: list[Any] | None = [None] * ctx.world if ctx.main else None
    dist.gather_object(obj, parts, dst=0)
    return parts


def map_images(
    work: Callable[[Any], Iterable[tuple[int, Any]]], dataset, batch_size: int, ctx: Context | None
) -> list[Any] | None:
    """``work(data)`` yields ``(index into data, record)`` per image; the records of every image
    of ``dataset`` in its order. Under torchrun, each rank works on its ``Shard``
    (``shard_indices``) and rank 0 gets all records (``None`` on the other ranks)."""
    if ctx is None:
        return merge([list(work(dataset))], len(dataset))
    shard = Shard(dataset, shard_indices(len(dataset), batch_size, ctx.rank, ctx.world))
    mine = [(shard.indices[k], record) for k, record in work(shard)]
    parts = gather(mine, ctx)
    return merge(parts, len(dataset)) if parts is not None else None
