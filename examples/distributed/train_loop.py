"""The plain loop under ``torchrun``: a DDP model, ``balancer.backward(losses)``, ``optimizer.step()``.

    torchrun --standalone --nproc-per-node 2 examples/distributed/train_loop.py   # 2 processes (gloo, CPU)
    python examples/distributed/train_loop.py                                     # the same loop, 1 process

Every rank balances the union of the ranks' slices (docs/distributed.md): the weights printed and the final
parameters are those of one process on the whole 60-sample batch, whatever the number of processes (the test
``tests/unit/distributed/test_launchers.py`` runs both and compares). ``--save FILE`` writes the final
parameters (rank 0). On GPUs use ``"nccl"`` and one GPU per rank (``cuda:LOCAL_RANK``).
"""

from __future__ import annotations

import argparse
import os
import sys

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

import molearn
from molearn.methods import MGDA

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

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        z = self.trunk(x)
        return [h(z).squeeze(-1) for h in self.heads]


torch.manual_seed(0)
net = Net()
model = DistributedDataParallel(net) if world > 1 else net  # DDP broadcasts rank 0's parameters
bal = molearn.Balancer(MGDA(), shared=net.trunk, module=model)
opt = torch.optim.SGD(net.parameters(), lr=0.05)
data = torch.Generator().manual_seed(1)  # the same global batches on every rank
for _ in range(5):
    x, y = torch.randn(60, 8, generator=data), torch.randn(60, 3, generator=data)
    mine = slice(rank * 60 // world, (rank + 1) * 60 // world)  # equal slices (a DistributedSampler's job)
    opt.zero_grad()
    losses = [((out - y[mine, i]) ** 2).mean() for i, out in enumerate(model(x[mine]))]  # means
    info = bal.backward(losses)  # the global losses, Gramian and weights: the same on every rank
    opt.step()
if rank == 0:
    print("weights of the last step:", [round(w, 6) for w in info.weights.tolist()])
    if args.save:
        torch.save(torch.cat([p.detach().flatten() for p in net.parameters()]), args.save)
if dist.is_initialized():
    dist.destroy_process_group()
    # gloo's worker threads may still be releasing the last collective's tensors while the interpreter is torn
    # down, which aborts the process (SIGABRT; pytorch/pytorch#179291): leave without that teardown.
    sys.stdout.flush()
    os._exit(0)
