"""`synaptorch spike-eval --finetune-method`: each method from the command line, and its errors."""

import json

import pytest


def last_json(text: str) -> dict:
    return json.loads(text.strip().splitlines()[-1])


@pytest.mark.parametrize("method", ["equilibrium", "tks", "distill"])
def test_spike_eval_fine_tunes_with_each_method(cli, trained_run, corpus, method):
    args = ("--data", corpus, "--steps", "2,4", "--max-tokens", 64, "--finetune-steps", 2, "--finetune-t", 2)
    result = cli("spike-eval", trained_run.path, *args, "--finetune-method", method)
    assert result.exit_code == 0, result.output
    record = last_json(result.stdout)
    assert record["finetune"]["method"] == method and record["finetune"]["steps"] == 2
    assert f"fine-tuned 2 steps at T = 2 ({method}" in result.stdout
    assert all(0 < r["equilibrium_gap"] <= 0.5 / r["steps"] + 1e-6 for r in record["spiking"])
    assert all(r["energy_pj_per_token"] > 0 for r in record["spiking"])


def test_spike_eval_distils_from_a_cached_teacher(cli, trained_run, corpus, tmp_path):
    cache = tmp_path / "cache"
    args = ("--data", corpus, "--steps", "4", "--max-tokens", 64, "--finetune-seconds", 0.5)
    teacher = ("--finetune-method", "distill", "--teacher", trained_run.path, "--teacher-cache", cache)
    result = cli("spike-eval", trained_run.path, *args, *teacher)
    assert result.exit_code == 0, result.output
    assert (cache / "header.json").is_file()
    assert last_json(result.stdout)["finetune"]["steps"] >= 1
    again = cli("spike-eval", trained_run.path, *args, *teacher)  # reads the cache it filled
    assert again.exit_code == 0, again.output


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (("--finetune-method", "bptt"), "bptt"),
        (("--finetune-gradient", "exact"), "exact"),
        (("--finetune-seconds", -1), ">= 0"),
        (("--steps", "0,4"), "from 1 to"),
        (("--teacher-cache", "c"), "distill"),
        (("--finetune-method", "distill", "--teacher-cache", "c"), "needs --teacher"),
        (("--finetune-method", "distill", "--distill-alpha", 3), "alpha"),
        (("--finetune-method", "distill", "--teacher", "nowhere"), "teacher not found"),
        (("--finetune-method", "surrogate", "--finetune-gradient", "equilibrium", "--finetune-steps", 1), "own"),
    ],
)
def test_spike_eval_method_settings_that_cannot_work_are_one_line_errors(
    cli, trained_run, corpus, args, fragment, assert_user_error
):
    assert_user_error(cli("spike-eval", trained_run.path, "--data", corpus, "--max-tokens", 64, *args), fragment)
