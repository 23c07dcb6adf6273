"""The DEQ layers under DistributedDataParallel: two CPU processes (gloo) average their gradients,
and the average equals one process's gradient on the whole batch.

Each process takes half of the batch; with a loss that is a mean over the samples, DDP's average
of the two halves' gradients is the gradient of the mean over the whole batch. The implicit
backward solves its adjoint on each half separately, so the two agree up to the solver's
tolerance (1e-12 here, in float64).
"""

import tempfile
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as nnf
from torch.nn.parallel import DistributedDataParallel
from torch.testing import assert_close

from deqlib import ConvDEQ, Picard, TanhDEQ

WORLD = 2


def make_models() -> dict[str, torch.nn.Module]:
    """The same float64 layers in every process (seeded), one per kind."""
    options = dict(dtype=torch.float64, solver=Picard(tol=1e-12, max_iter=500))
    return {
        "tanh": TanhDEQ(16, 8, 3, generator=torch.Generator().manual_seed(0), **options),
        "conv": ConvDEQ(
            (4, 4), 3, channels=2, pool=2, generator=torch.Generator().manual_seed(1), **options
        ),
    }


def make_batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(2)
    return (
        torch.rand(8, 16, generator=g, dtype=torch.float64),
        torch.randint(0, 3, (8,), generator=g),
    )


def gradients(model: torch.nn.Module, x, y) -> dict[str, torch.Tensor]:
    model.zero_grad()
    nnf.cross_entropy(model(x), y).backward()
    return {name: p.grad.clone() for name, p in model.named_parameters()}


def _worker(rank: int, folder: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"file://{folder}/store", rank=rank, world_size=WORLD
    )
    try:
        x, y = make_batch()
        mine = slice(rank * len(x) // WORLD, (rank + 1) * len(x) // WORLD)
        out = {}
        for name, model in make_models().items():
            ddp = DistributedDataParallel(model)
            ddp.zero_grad()
            nnf.cross_entropy(ddp(x[mine]), y[mine]).backward()  # DDP averages in backward
            out[name] = {n: p.grad.clone() for n, p in model.named_parameters()}
        torch.save(out, Path(folder) / f"grads{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_ddp_average_equals_the_whole_batch_gradient():
    with tempfile.TemporaryDirectory() as folder:
        mp.spawn(_worker, args=(folder,), nprocs=WORLD, join=True)
        per_rank = [torch.load(Path(folder) / f"grads{r}.pt") for r in range(WORLD)]
    x, y = make_batch()
    for name, model in make_models().items():
        whole = gradients(model, x, y)
        for rank, grads in enumerate(per_rank):
            assert grads[name].keys() == whole.keys()
            for param in whole:
                assert_close(
                    grads[name][param],
                    whole[param],
                    atol=1e-10,
                    rtol=1e-9,
                    msg=lambda m, p=param, r=rank, n=name: (
                        f"{n}.{p}, rank {r} under DDP vs one process: {m}"
                    ),
                )
