"""``experiments/open-fl`` on tiny settings: rows, trends, and the written files."""

from __future__ import annotations

import csv

import pytest
import torch

from experiments import common

open_fl = common.load("open-fl")

TINY = open_fl.Settings(
    rounds=30,
    logit_rounds=20,
    seeds=1,
    quad_kappas=(1.0, 10.0),
    quad_sigmas=(0.0, 10.0),
    quad_departures=(0.0, 0.2),
    logit_l2s=(1e-1,),
    logit_batches=(None, 2),
    fmnist=False,
    quad_universe=200,
    logit_clients=60,
)


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_run_and_write_outputs(tmp_path):
    result = open_fl.run(TINY)
    # quadratic: 2 kappa + 2 sigma + 2 turnover; logistic: 1 l2 + 2 batch; x 2 optimizers
    assert len(result.rows) == 2 * (6 + 3)
    for r in result.rows:
        assert r.radius > 0 and r.mean_clients > 0
    quad_kappa = [r for r in result.rows if (r.problem, r.sweep) == ("quadratic", "kappa")]
    assert sorted(round(r.kappa) for r in quad_kappa) == [1, 1, 10, 10]  # measured on the population
    batch = {(r.optimizer, r.value): r.grad_var for r in result.rows if r.sweep == "batch"}
    assert batch[("sgd", 0.0)] == 0.0 and batch[("sgd", 2.0)] > 0  # full batch: no gradient noise
    closed = [r for r in result.rows if r.sweep == "turnover" and r.value == 0.0 and r.optimizer == "sgd"]
    opened = [r for r in result.rows if r.sweep == "turnover" and r.value == 0.2 and r.optimizer == "sgd"]
    assert closed[0].radius < opened[0].radius  # clients leaving and joining move the optimum
    paths = open_fl.write_outputs(result, tmp_path, plot=True).paths
    assert paths["radius.png"].stat().st_size > 1000
    md = paths["results.md"].read_text()
    assert "| quadratic | kappa | sgd |" in md and "## Trends" in md
    with open(paths["results.csv"]) as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == len(result.rows) and float(rows[0]["radius"]) == pytest.approx(result.rows[0].radius)


def test_cli_options_parse():
    args = open_fl.build_parser().parse_args(["--quick", "--no-fmnist", "--seeds", "2", "--out", "x"])
    assert args.quick and args.no_fmnist and args.seeds == [0, 1] and args.threads == 1
