"""`experiments/llm-joint --quick`: recipes on a tiny random Llama over two seeds, MAXRIGHT's f* measured on
the training data, outputs written and consistent, finished runs reused, the verdict rule."""

from __future__ import annotations

import argparse
import csv
import math
from dataclasses import replace

import pytest

pytest.importorskip("transformers")
pytest.importorskip("peft")
pytest.importorskip("datasets")
pytest.importorskip("chatterbot_corpus")

from experiments import common

llm_joint = common.load("llm-joint")


def _args(*argv: str) -> argparse.Namespace:
    return llm_joint.build_parser().parse_args(list(argv))


# Three recipes (both sequential ones give MAXRIGHT's f*); every recipe's run is tested with the trainers
# (tests/unit/llm); the slow test runs the whole --quick configuration through the CLI.
RECIPES = ("sft_dpo", "dpo_sft", "maxright")


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("llm_joint")
    s = replace(llm_joint.QUICK_SETTINGS, recipes=RECIPES)
    return llm_joint.run(s, out=out), out, s


def test_quick_run_records_paths_and_f_star(quick, tmp_path):
    res, _, s = quick
    assert [(r.seed, r.recipe) for r in res.runs] == [(0, "sft_dpo"), (0, "dpo_sft"), (0, "maxright"),
                                                      (1, "sft_dpo"), (1, "dpo_sft"), (1, "maxright")]
    _, f0_dpo, acc0 = res.initial
    assert f0_dpo == pytest.approx(math.log(2), abs=1e-5) and acc0 == 0.0  # policy == reference at the start
    for r in res.runs:
        assert len(r.history) == s.steps and math.isfinite(r.f_sft) and r.cpu_seconds_per_step > 0
        evals = [h["step"] for h in r.history if "eval_sft" in h]
        assert evals == list(range(s.eval_steps, s.steps + 1, s.eval_steps))
        assert all(0.0 <= h["eval_acc"] <= 1.0 for h in r.history if "eval_acc" in h)
        assert (r.f_sft, r.f_dpo) == (r.history[-1]["eval_sft"], r.history[-1]["eval_dpo"])
    for seed in (0, 1):
        by = {r.recipe: r for r in res.runs if r.seed == seed}
        half = s.steps // 2
        # f*: the training-data objective at the end of each sequential run's first stage (same seed)
        f_sft = by["sft_dpo"].history[half - 1]["train_sft"]
        f_dpo = by["dpo_sft"].history[half - 1]["train_dpo"]
        assert by["maxright"].f_star == (f_sft, f_dpo) == llm_joint.measured_f_star(res.runs, s, seed)
        assert [h["objective"] for h in by["sft_dpo"].history] == ["sft"] * half + ["dpo"] * half
        assert sum(1 for h in by["maxright"].history if h.get("refreshed")) == 2  # steps 1, 3 (refresh 2)
    paths = llm_joint.write_outputs(res, tmp_path).paths
    with open(paths["results.csv"]) as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 6 and {r["preferences"] for r in rows} == {"constructed"}
    for row in rows:
        lam = float(row["lambda"])
        want = (1 - lam) * float(row["f_sft"]) + lam * float(row["f_dpo"])
        assert float(row["weighted"]) == pytest.approx(want, abs=1e-5)
    with open(paths["history.csv"]) as fh:
        assert len(list(csv.DictReader(fh))) == 6 * s.steps
    md = paths["results.md"].read_text()
    assert "constructed (synthetic) preference pairs" in md and "MAXRIGHT λ=0.5: **" in md
    assert paths["front.png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_finished_runs_are_reused(quick):
    res, out, s = quick
    again = llm_joint.run(s, out=out)  # every run is on disk: nothing is trained
    assert [(r.seed, r.recipe, r.f_sft, r.f_star) for r in again.runs] == \
        [(r.seed, r.recipe, r.f_sft, r.f_star) for r in res.runs]
    assert len(list((out / "runs").glob("*.json"))) == 6


def _rec(recipe, seed, f_sft, f_dpo, cpu=1.0):
    return llm_joint.JointRunRecord(recipe, 0.5, seed, f_sft, f_dpo, 0.5, 1, 1, cpu, cpu, 1, 1.0)


def test_mean_ci_and_verdict_rule():
    m, h = llm_joint.mean_ci([1.0, 2.0, 3.0])
    assert m == 2.0 and h == pytest.approx(4.302653 * 1.0 / math.sqrt(3), rel=1e-5)  # t(2) = 4.3027
    assert math.isnan(llm_joint.mean_ci([1.0])[1])
    s = llm_joint.QUICK_SETTINGS

    def result(deltas_sft, deltas_dpo):
        runs = []
        for seed, (ds, dd) in enumerate(zip(deltas_sft, deltas_dpo)):
            runs += [_rec("sft_dpo", seed, 3.0, 0.5), _rec("alright", seed, 3.0 + ds, 0.5 + dd, cpu=1.1)]
        return llm_joint.LlmJointResult(s, runs, (4.0, math.log(2), 0.0), {}, 1.0, "cpu")

    def v(ds, dd):
        return llm_joint.verdict(result(ds, dd), "alright", 0.5)[0]

    assert v([-0.2, -0.21, -0.19], [-0.1, -0.11, -0.09]) == "supported"
    assert v([-0.2, -0.21, -0.19], [0.1, 0.11, 0.09]) == "contradicted"
    assert v([-0.2, 0.2, -0.1], [-0.1, -0.11, -0.09]) == "not resolved"
    assert llm_joint.cost_ratios(result([0, 0], [0, 0]), "alright", 0.5) == pytest.approx([1.1, 1.1])


def test_settings_from_args_and_bad_input(capsys):
    s = llm_joint.settings_from_args(_args("--quick", "--lambdas", "0.1,0.9", "--steps", "3", "--seeds", "3"))
    assert s.tiny and s.lambdas == (0.1, 0.9) and s.steps == 3 and s.seeds == (0, 1, 2)
    g = llm_joint.settings_from_args(_args("--gpu", "--model", "/some/folder"))
    assert g.bf16 and g.model == "/some/folder" and g.max_length == 256
    d = llm_joint.settings_from_args(_args())
    assert d.seeds == (0, 1, 2) and d.recipes == ("sft_dpo", "dpo_sft", "alright", "maxright")
    assert llm_joint.main(["--quick", "--lambdas", "0.5,1.5"]) == 2
    assert "lambdas must be values in [0, 1]" in capsys.readouterr().err
    with pytest.raises(ValueError, match="recipes"):
        llm_joint.run(replace(llm_joint.QUICK_SETTINGS, recipes=("alright", "sft_only")))
    with pytest.raises(ValueError, match="baseline"):
        llm_joint.run(replace(llm_joint.QUICK_SETTINGS, recipes=("alright",)))
    with pytest.raises(ValueError, match="steps"):
        llm_joint.run(replace(llm_joint.QUICK_SETTINGS, steps=0))
    with pytest.raises(ValueError, match="comma list"):
        llm_joint.settings_from_args(_args("--lambdas", "a,b"))
    assert llm_joint.settings_from_args(_args("--quick", "--f-star", "1.5,0.05")).f_star_dpo == 0.05
    assert llm_joint.main(["--quick", "--f-star", "1.5"]) == 2


def test_given_f_star_overrides_the_measured_one():
    rec = llm_joint.JointRunRecord
    runs = [rec("sft_dpo", 0.5, 0, 1, 1, 0, 1, 1, 1, 1, 1, 1, history=[{"train_sft": 2.5}]),
            rec("dpo_sft", 0.5, 0, 1, 1, 0, 1, 1, 1, 1, 1, 1, history=[{"train_dpo": 0.4}])]
    s = llm_joint.QUICK_SETTINGS
    assert llm_joint.measured_f_star(runs, s, 0) == (2.5, 0.4)
    assert llm_joint.measured_f_star(runs, s, 1) == (0.0, 0.0)  # none ran for that seed: the official default
    assert llm_joint.measured_f_star(runs, replace(s, f_star_sft=1.5, f_star_dpo=0.05), 0) == (1.5, 0.05)


@pytest.mark.slow
def test_quick_cli_all_recipes(tmp_path):
    assert llm_joint.main(["--quick", "--out", str(tmp_path)]) == 0
    with open(tmp_path / "results.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["recipe"] for r in rows] == ["sft_dpo", "dpo_sft", "alright", "maxright"] * 2
    assert (tmp_path / "front.png").stat().st_size > 0
