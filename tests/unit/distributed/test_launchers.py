"""The real launchers (issue 16, item 3): ``torchrun`` (``python -m torch.distributed.run``) on the examples
under ``examples/distributed/`` and ``accelerate launch`` on ``BalancedTrainer``, gloo on the CPU, offline.

Each launched run must exit with status 0 and end with the parameters of the same script run as one process
(the union batch) to 1e-6. Every subprocess has a timeout: a hang fails the test, it does not block the
suite.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist

from . import _worker

pytestmark = pytest.mark.skipif(
    not (dist.is_available() and dist.is_gloo_available()), reason="torch.distributed with gloo is needed"
)

ROOT = Path(__file__).resolve().parents[3]
EXAMPLES = ROOT / "examples" / "distributed"
TOL = 1e-6
TIMEOUT = 120.0


def _env() -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join([str(ROOT / "src"), str(ROOT)]))
    for name in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)  # a pytest run inside torchrun must not make the one-process runs ranks
    return env


def launch(
    argv: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: float = TIMEOUT
) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` in a session of its own; past ``timeout`` the whole session (the launcher and the ranks
    it started) is killed and the test fails with what it printed (a hang)."""
    proc = subprocess.Popen(
        argv, cwd=cwd, env=env or _env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,
    )  # fmt: skip
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
        pytest.fail(f"{' '.join(argv)} still running after {timeout} s (a hang):\n{stdout}\n{stderr}")
    return subprocess.CompletedProcess(argv, proc.returncode, stdout, stderr)


def _run(argv: list[str], cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    done = launch(argv, cwd, env)
    assert done.returncode == 0, f"{' '.join(argv)} exited with {done.returncode}:\n{done.stderr[-4000:]}"
    return done


def torchrun(nproc: int, *args: str) -> list[str]:
    """The ``torchrun`` command line (``--standalone``: a local rendezvous on a free port)."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}", *args]


def _params(script: str, tmp: Path, nproc: int) -> tuple[torch.Tensor, str]:
    """Run ``script`` as one process (``nproc == 1``) or under torchrun in its own folder; the final
    parameters rank 0 saved, and what rank 0 printed."""
    folder = tmp / f"{Path(script).stem}-{nproc}"
    folder.mkdir()
    path = EXAMPLES / script
    argv = [sys.executable, str(path)] if nproc == 1 else torchrun(nproc, str(path))
    done = _run([*argv, "--save", "params.pt"], folder)
    return torch.load(folder / "params.pt"), done.stdout


@pytest.fixture(scope="module")
def one_process(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[torch.Tensor, str]]:
    """Each example run as plain ``python``: one process on the union batches."""
    tmp = tmp_path_factory.mktemp("one-process")
    return {script: _params(script, tmp, 1) for script in ("train_loop.py", "train_mt.py")}


def test_torchrun_loop_example_equals_one_process(
    tmp_path: Path, one_process: dict[str, tuple[torch.Tensor, str]]
) -> None:
    one, printed_one = one_process["train_loop.py"]
    got, printed = _params("train_loop.py", tmp_path, 2)
    diff = float((got - one).abs().max())
    assert diff < TOL, f"2 ranks: {diff:.2e} from one process"
    weights = [line for line in printed.splitlines() if line.startswith("weights of the last step")]
    assert len(weights) == 1  # rank 0 prints, rank 1 does not
    assert weights == [line for line in printed_one.splitlines() if line.startswith("weights")]


@pytest.mark.parametrize("nproc", [2, 3])
def test_torchrun_trainer_example_equals_one_process(
    tmp_path: Path, one_process: dict[str, tuple[torch.Tensor, str]], nproc: int
) -> None:
    one, _ = one_process["train_mt.py"]
    got, printed = _params("train_mt.py", tmp_path, nproc)
    diff = float((got - one).abs().max())
    assert diff < TOL, f"{nproc} ranks: {diff:.2e} from one process"
    assert printed.count("'epoch': 3") == 1  # rank 0 prints, the others do not
    logs = tmp_path / f"train_mt-{nproc}" / "runs" / "mt"  # rank 0 writes
    assert (logs / "checkpoint.pt").is_file() and len((logs / "steps.csv").read_text().splitlines()) == 1 + 12


def test_accelerate_launch_balanced_trainer(tmp_path: Path) -> None:
    """``accelerate launch`` with several CPU processes: ``--cpu --num_processes 2`` starts one process (it
    expects MPI: ``--mpirun_hostfile``); ``--multi_gpu --num_processes 2`` starts them through
    ``torch.distributed.run`` on a machine without GPUs too, and ``TrainingArguments(use_cpu=True,
    ddp_backend="gloo")`` keeps them on the CPU."""
    pytest.importorskip("transformers")
    pytest.importorskip("accelerate")
    from . import _hf_worker as hw

    port = str(_worker.free_port())
    argv = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2"]
    argv += ["--num_machines", "1", "--main_process_port", port, "--mixed_precision", "no"]
    argv += ["--dynamo_backend", "no", "-m", "tests.unit.distributed._hf_launched", str(tmp_path), "mgda"]
    _run(argv, ROOT)
    ranks: list[dict[str, Any]] = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in (0, 1)]
    for r, res in enumerate(ranks):
        assert "crash" not in res, f"rank {r}:\n{res['crash']}"
        assert res["world"] == 2 and res["mgda"]["wrapped"] == "DistributedDataParallel"
        assert res["mgda"]["distributed"]
    a, b = ranks[0]["mgda"], ranks[1]["mgda"]
    assert torch.equal(a["params"], b["params"]) and a["weights"] == b["weights"]
    ref = hw.train("mgda", tmp_path / "one", batch=4)  # one process, the union batches
    diff = float((a["params"] - ref["params"]).abs().max())
    assert diff < TOL, f"accelerate launch, 2 processes: {diff:.2e} from one process on the union"


def test_the_docs_excerpts_are_lines_of_the_examples() -> None:
    """docs/distributed.md shows excerpts of the examples (the docs test skips them): every line of each
    excerpt must be a line of its example file, so the page cannot drift from the code that runs."""
    docs = (ROOT / "docs" / "distributed.md").read_text(encoding="utf-8").splitlines()
    checked = 0
    for i, line in enumerate(docs):
        found = re.search(r"docs-test: skip \(an excerpt of (examples/distributed/\w+\.py)", line)
        if not found:
            continue
        source = {s.strip() for s in (ROOT / found[1]).read_text(encoding="utf-8").splitlines()}
        assert docs[i + 1].startswith("```python")
        end = next(j for j in range(i + 2, len(docs)) if docs[j].startswith("```"))
        missing = [s for s in docs[i + 2 : end] if s.strip() and s.strip() not in source]
        assert not missing, f"docs/distributed.md:{i + 1}: not in {found[1]}: {missing}"
        checked += 1
    assert checked == 2
