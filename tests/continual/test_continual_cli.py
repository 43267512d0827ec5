import json

from synaptorch.continual import ContinualConfig


def test_cli_trains_each_task_and_writes_the_matrix(cli, idx_folder, tmp_path):
    out = tmp_path / "run"
    args = ("continual", "train", "--method", "hlop", "--data", idx_folder, "--tasks", "2", "--set", "hidden=[16,16]")
    result = cli(*args, "--set", "subspace_first=[8,8,4]", "--set", "subspace_step=[4,4,2]", "--out", out)
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout.strip().splitlines()[-1])
    assert record["method"] == "hlop" and record["tasks"] == 2
    assert [len(row) for row in record["accuracy"]] == [1, 2]
    assert record["bwt"] == round(record["accuracy"][1][0] - record["accuracy"][0][0], 4)
    saved = json.loads((out / "result.json").read_text())
    assert saved["acc"] == record["acc"] and len(saved["subspaces"]) == 2
    assert ContinualConfig(**saved["config"]).hidden == (16, 16)


def test_cli_refuses_bad_input_with_one_line(cli, idx_folder, tmp_path, assert_user_error):
    base = ("continual", "train", "--data", idx_folder, "--out", tmp_path / "run")
    assert_user_error(cli(*base, "--method", "hlop", "--tasks", "0"), "n_tasks")
    assert_user_error(cli(*base, "--method", "hlop", "--set", "hidden=3"), "hidden")
    assert_user_error(cli(*base, "--method", "sgd"), "--method")
    assert_user_error(cli(*base[:3], tmp_path / "missing", *base[4:], "--method", "gpm"), "neither a data set name")
    assert not (tmp_path / "run").exists()
