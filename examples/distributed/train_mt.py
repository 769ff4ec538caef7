"""``molearn.train.Trainer`` under ``torchrun``: a DDP model, each rank its ``DistributedSampler`` slice.

    torchrun --standalone --nproc-per-node 2 examples/distributed/train_mt.py   # 2 processes (gloo, CPU)
    python examples/distributed/train_mt.py                                     # the same training, 1 process

A global batch of 24 split over 1, 2, 3, 4, ... ranks, 4 steps per epoch on any world size: every rank takes
the update of the union batch, so the run equals the one-process run (``tests/unit/distributed/
test_launchers.py`` runs both and compares). Rank 0 writes ``runs/mt`` (logs, checkpoint); run it again and
it resumes from the checkpoint. ``--save FILE`` writes the final parameters (rank 0). On GPUs use ``"nccl"``
and one GPU per rank.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterator
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

from molearn.train import Trainer

parser = argparse.ArgumentParser()
parser.add_argument("--save", default=None, help="write the final parameters here (rank 0)")
args = parser.parse_args()

if "RANK" in os.environ:  # set by torchrun
    dist.init_process_group("gloo")
rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.trunk = nn.Sequential(nn.Linear(8, 32), nn.ReLU())
        self.heads = nn.ModuleList(nn.Linear(32, 1) for _ in range(3))

    def shared_parameters(self) -> Iterator[nn.Parameter]:  # the Trainer finds it also through DDP
        return self.trunk.parameters()

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        z = self.trunk(x)
        return [h(z).squeeze(-1) for h in self.heads]


def loss_fn(model: nn.Module, batch: Any) -> list[torch.Tensor]:
    x, y = batch
    return [((out - y[:, i]) ** 2).mean() for i, out in enumerate(model(x))]  # means over the rank's slice


torch.manual_seed(0)
net = Net()
model = DistributedDataParallel(net) if world > 1 else net
g = torch.Generator().manual_seed(1)
data = TensorDataset(torch.randn(96, 8, generator=g), torch.randn(96, 3, generator=g))
# equal slices: 96 samples, a global batch of 24 split over the ranks (4 steps per epoch on any world size)
assert 24 % world == 0, "the global batch of 24 must split evenly over the ranks"
sampler = DistributedSampler(data, num_replicas=world, rank=rank, shuffle=True, seed=0)
loader = DataLoader(data, batch_size=24 // world, sampler=sampler)
trainer = Trainer(
    model, loss_fn, "mgda", torch.optim.SGD(net.parameters(), lr=0.05), log_dir="runs/mt", progress=False
)
history = trainer.fit(loader, epochs=3, resume=True)  # resume=True: continue from runs/mt/checkpoint.pt
if rank == 0:
    print(history[-1])
    if args.save:
        torch.save(torch.cat([p.detach().flatten() for p in net.parameters()]), args.save)
if dist.is_initialized():
    dist.destroy_process_group()
    # gloo's worker threads may still be releasing the last collective's tensors while the interpreter is torn
    # down, which aborts the process (SIGABRT; pytorch/pytorch#179291): leave without that teardown.
    sys.stdout.flush()
    os._exit(0)
