"""`experiments/llm-joint --quick`: five recipes on a tiny random Llama, outputs written and consistent."""

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


# Two recipes (one joint, one sequential) keep the test short; every recipe's two-step run is tested with
# the trainers (tests/unit/llm); the slow test runs the whole --quick configuration.
RECIPES = ("mix", "dpo_sft")


@pytest.fixture(scope="module")
def quick_result():
    return llm_joint.run(replace(llm_joint.QUICK_SETTINGS, recipes=RECIPES))


def test_quick_run_all_recipes(quick_result, tmp_path):
    res = quick_result
    assert [r.recipe for r in res.runs] == list(RECIPES)
    f0_dpo = res.initial[1]
    assert f0_dpo == pytest.approx(math.log(2), abs=1e-5)  # policy == reference at the start
    for r in res.runs:
        assert math.isfinite(r.f_sft) and math.isfinite(r.f_dpo) and r.seconds_per_step > 0
        assert len(r.history) == llm_joint.QUICK_SETTINGS.steps
    by = {r.recipe: r for r in res.runs}
    assert (by["mix"].steps_sft, by["mix"].steps_dpo) == (2, 2)            # Mix steps on both
    assert (by["dpo_sft"].steps_sft, by["dpo_sft"].steps_dpo) == (1, 1)    # half of the steps per stage
    assert [h["objective"] for h in by["dpo_sft"].history] == ["dpo", "sft"]
    paths = llm_joint.write_outputs(res, tmp_path).paths
    assert all(p.stat().st_size > 0 for p in paths.values())
    with open(paths["results.csv"]) as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 2 and {r["preferences"] for r in rows} == {"constructed"}
    for row in rows:
        lam = float(row["lambda"])
        expected = (1 - lam) * float(row["f_sft"]) + lam * float(row["f_dpo"])
        assert float(row["weighted"]) == pytest.approx(expected, abs=1e-5)
    with open(paths["history.csv"]) as fh:
        hist = list(csv.DictReader(fh))
    assert len(hist) == 2 * 2 and {h["objective"] for h in hist} <= {"sft", "dpo", "mix"}
    md = paths["results.md"].read_text()
    assert "constructed (synthetic) preference pairs" in md and "Mix" in md and "DPO→SFT" in md
    assert paths["front.png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_settings_from_args_and_bad_input(capsys):
    s = llm_joint.settings_from_args(_args("--quick", "--lambdas", "0.1,0.9", "--steps", "3"))
    assert s.tiny and s.lambdas == (0.1, 0.9) and s.steps == 3
    g = llm_joint.settings_from_args(_args("--gpu", "--model", "/some/folder"))
    assert g.bf16 and g.model == "/some/folder" and g.max_length == 256
    assert llm_joint.main(["--quick", "--lambdas", "0.5,1.5"]) == 2
    assert "lambdas must be values in [0, 1]" in capsys.readouterr().err
    with pytest.raises(ValueError, match="recipes"):
        llm_joint.run(replace(llm_joint.QUICK_SETTINGS, recipes=("alright", "sft_only")))
    with pytest.raises(ValueError, match="steps"):
        llm_joint.run(replace(llm_joint.QUICK_SETTINGS, steps=0))
    with pytest.raises(ValueError, match="comma list"):
        llm_joint.settings_from_args(_args("--lambdas", "a,b"))


def test_maxright_f_star_from_the_sequential_runs():
    def rec(recipe, hist):
        return llm_joint.JointRunRecord(recipe, 0.5, 1.0, 0.5, 0.5, 1, 1, 1.0, 1, 1.0, history=hist)

    runs = [
        rec("sft_dpo", [{"eval_sft": 2.5}, {"eval_sft": 2.1, "eval_dpo": 0.1}]),  # its f_DPO: other reference
        rec("dpo_sft", [{"eval_dpo": 0.55}, {"eval_dpo": 0.6, "eval_sft": 2.4}, {"eval_sft": float("nan")}]),
        rec("mix", [{"eval_sft": 0.1, "eval_dpo": 0.01}]),  # joint runs never count
    ]
    s = llm_joint.QUICK_SETTINGS
    assert llm_joint.estimate_f_star(runs, s) == (2.1, 0.55)
    assert llm_joint.estimate_f_star(runs[2:], s) == (0.0, 0.0)  # none ran: the official default
    given = replace(s, f_star_sft=1.5, f_star_dpo=0.05)
    assert llm_joint.estimate_f_star(runs, given) == (1.5, 0.05)
    assert llm_joint.settings_from_args(_args("--quick", "--f-star", "1.5,0.05")).f_star_dpo == 0.05
    assert llm_joint.main(["--quick", "--f-star", "1.5"]) == 2


@pytest.mark.slow
def test_quick_cli_all_recipes(tmp_path):
    assert llm_joint.main(["--quick", "--out", str(tmp_path)]) == 0
    with open(tmp_path / "results.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["recipe"] for r in rows] == ["alright", "maxright", "mix", "sft_dpo", "dpo_sft"]
    assert (tmp_path / "front.png").stat().st_size > 0
