import dataclasses
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
from functools import cached_property
from pathlib import Path

import click
import pytest
import torch

import synaptorch
from synaptorch import BDH, BDHConfig
from synaptorch.checkpoint import load_model, load_trainer_state, step_checkpoints
from synaptorch.cli import COMMANDS, main
from synaptorch.data.corpus import load_corpus
from synaptorch.data.tokenizer import ByteTokenizer
from synaptorch.models.sampling import stream_tokens
from synaptorch.train.config import TrainConfig
from synaptorch.train.trainer import Trainer, evaluate_loss, learning_rate

PROMPT = "the neuron"


def last_json(stdout: str) -> dict:
    return json.loads(stdout.strip().splitlines()[-1])


def _state_dicts_equal(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


# --- help ---------------------------------------------------------------------------------


def _commands() -> dict[str, click.Command]:
    """Every command and subcommand by its full name, e.g. "inspect report"."""
    found = {}
    for name in COMMANDS:
        command = main.get_command(None, name)
        found[name] = command
        for sub, subcommand in getattr(command, "commands", {}).items():
            found[f"{name} {sub}"] = subcommand
    return found


@pytest.mark.parametrize("name", sorted(_commands()))
def test_help_of_every_command_lists_its_options_with_help_and_default(cli, name):
    command = _commands()[name]
    result = cli(*name.split(), "--help")
    assert result.exit_code == 0
    for param in command.params:
        if isinstance(param, click.Option):
            assert all(opt in result.stdout for opt in param.opts), param.opts
            assert param.help, f"{param.opts} has no help"
            shown = param.show_default not in (None, False) or "[default:" in param.help
            assert param.is_flag or param.required or shown, f"{param.opts} shows no default"
        else:
            assert param.name.upper() in result.stdout


def test_top_level_help_lists_every_command_without_importing_torch():
    code = "import sys; from synaptorch.cli import main; main(['--help'])"
    proc = subprocess.run(
        [sys.executable, "-c", code.replace("main(['--help'])", _NO_TORCH)], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.endswith("torch imported: False\n")
    assert all(name in proc.stdout for name in COMMANDS)


_NO_TORCH = "main(['--help'], standalone_mode=False); print('torch imported:', 'torch' in sys.modules)"


def test_config_flags_come_from_the_config_fields(cli):
    help_text = cli("train", "--help").stdout
    for f in dataclasses.fields(TrainConfig):
        assert f"--{f.name.replace('_', '-')}" in help_text
        assert f.metadata["help"].split()[0] in help_text


def test_top_level_help_and_version(cli):
    result = cli("--help")
    assert result.exit_code == 0
    assert all(name in result.stdout for name in ("train", "generate", "eval", "info", "convert"))
    version = cli("--version")
    assert version.exit_code == 0
    assert synaptorch.__version__ in version.stdout


# --- train ------------------------------------------------------------------------------------


def test_train_writes_checkpoints_metrics_and_a_final_json_line(trained_run, read_metrics):
    run = trained_run.path
    assert sorted(p.name for p in run.iterdir()) == ["metrics.jsonl", "step-0000002", "step-0000004"]
    for step in (2, 4):
        folder = run / f"step-{step:07d}"
        assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors", "trainer.pt"]
        assert json.loads((folder / "config.json").read_text())["step"] == step
        assert load_trainer_state(folder)["step"] == step

    records = read_metrics(run)
    assert [r["step"] for r in records if "train_loss" in r] == [1, 2, 3, 4]
    evals = [r for r in records if "val_loss" in r]
    assert [r["step"] for r in evals] == [2, 4]

    lines = trained_run.stdout.strip().splitlines()
    n_params = sum(p.numel() for p in load_model(run).parameters())
    assert lines[0].startswith(f"training bdh ({n_params:,} parameters)")
    assert "--- sample ---" in lines
    final = last_json(trained_run.stdout)
    assert final["checkpoint"] == str(run / "step-0000004")
    assert final["step"] == 4
    assert final["tokens"] == 4 * 4 * 16  # steps * batch * block
    assert final["val_loss"] == evals[-1]["val_loss"]


def test_logged_learning_rate_is_the_one_the_step_used(trained_run, read_metrics):
    cfg = TrainConfig.from_dict(_saved_train_config(trained_run.path / "step-0000004"))
    for record in (r for r in read_metrics(trained_run.path) if "lr" in r):
        assert record["lr"] == learning_rate(record["step"] - 1, cfg)


def test_keep_last_removes_older_checkpoints(tiny_train, tmp_path):
    result = tiny_train(tmp_path / "run", "--max-steps", 3, "--eval-interval", 1, "--keep-last", 2)
    assert result.exit_code == 0, result.output
    assert [p.name for p in step_checkpoints(tmp_path / "run")] == ["step-0000002", "step-0000003"]


def _saved_train_config(folder: Path) -> dict:
    return json.loads((folder / "config.json").read_text())["train"]


def test_resume_keeps_every_saved_setting_not_given_again(cli, tiny_args, run_copy, read_metrics):
    result = cli("train", "--out", run_copy, *tiny_args, "--resume", "--max-steps", 6, "--eval-interval", 1)
    assert result.exit_code == 0, result.output
    assert "from step 4" in result.stdout.splitlines()[0]
    assert last_json(result.stdout)["step"] == 6
    before, after = _saved_train_config(run_copy / "step-0000004"), _saved_train_config(run_copy / "step-0000006")
    assert after == {**before, "max_steps": 6, "eval_interval": 1}
    assert [r["step"] for r in read_metrics(run_copy) if "train_loss" in r] == [1, 2, 3, 4, 5, 6]
    # Without flags the saved plan stands: the run is finished.
    again = cli("train", "--out", run_copy, "--resume", "--quiet")
    assert again.exit_code == 0, again.output
    assert "nothing to train" in again.stdout
    assert last_json(again.stdout)["step"] == 6


@pytest.mark.parametrize("max_steps", [None, 4, 2])
def test_resuming_a_finished_run_trains_nothing_rewrites_nothing_and_says_so(cli, run_copy, snapshot, max_steps):
    before = snapshot(run_copy)
    extra = () if max_steps is None else ("--max-steps", max_steps)
    result = cli("train", "--out", run_copy, "--resume", "--quiet", *extra)
    assert result.exit_code == 0, result.output
    assert f"nothing to train: {run_copy} is at step 4" in result.stdout
    final = last_json(result.stdout)
    assert final["step"] == 4 and final["checkpoint"] == str(run_copy / "step-0000004")
    assert math.isfinite(final["val_loss"])  # the last evaluation, from metrics.jsonl
    assert snapshot(run_copy) == before


@pytest.mark.parametrize(
    ("flags", "fragment"),
    [
        (("--lr", 0.5), "--lr cannot change on resume"),
        (("--batch-size", 2), "--batch-size cannot change on resume"),
        (("--n-layer", 3), "--n-layer cannot change on resume"),
        (("--preset", "cpu-tiny"), "a preset (--preset, or a config file's) means nothing there"),
        (("--model", "gpt"), "the run trains bdh, not gpt"),
    ],
)
def test_resume_refuses_to_change_a_setting_that_changes_results(
    cli, run_copy, snapshot, flags, fragment, assert_user_error
):
    before = snapshot(run_copy)
    assert_user_error(cli("train", "--out", run_copy, "--resume", "--max-steps", 6, *flags), fragment)
    assert snapshot(run_copy) == before


def test_a_run_stores_its_corpus_resolved_and_resume_checks_its_hash(
    cli, tiny_args, corpus, tmp_path, monkeypatch, assert_user_error
):
    monkeypatch.chdir(tmp_path)
    shutil.copyfile(corpus, tmp_path / "corpus.txt")
    args = [*tiny_args, "--data", "corpus.txt", "--max-steps", 2, "--eval-interval", 1]
    assert cli("train", "--out", "run", *args).exit_code == 0
    assert _saved_train_config(tmp_path / "run" / "step-0000002")["data"] == str(tmp_path / "corpus.txt")

    (tmp_path / "corpus.txt").rename(tmp_path / "moved.txt")
    assert_user_error(cli("train", "--out", "run", "--resume", "--max-steps", 3), "pass --data with a copy")
    with open(tmp_path / "moved.txt", "a") as f:
        f.write("one more line\n")
    changed = cli("train", "--out", "run", "--resume", "--max-steps", 3, "--data", "moved.txt")
    assert_user_error(changed, "has changed since the run was trained on it")
    assert [p.name for p in step_checkpoints(tmp_path / "run")] == ["step-0000001", "step-0000002"]

    shutil.copyfile(corpus, tmp_path / "copy.txt")
    moved = cli("train", "--out", "run", "--resume", "--max-steps", 3, "--data", "copy.txt", "--quiet")
    assert moved.exit_code == 0, moved.output
    assert _saved_train_config(tmp_path / "run" / "step-0000003")["data"] == str(tmp_path / "copy.txt")


def test_a_cuda_run_resumes_on_the_cpu(cli, run_copy, assert_user_error):
    config = run_copy / "step-0000004" / "config.json"
    meta = json.loads(config.read_text())
    meta["train"]["device"] = "cuda"
    config.write_text(json.dumps(meta))
    if not torch.cuda.is_available():
        assert_user_error(cli("train", "--out", run_copy, "--resume", "--max-steps", 5), "no CUDA device")
    result = cli("train", "--out", run_copy, "--resume", "--max-steps", 5, "--device", "cpu", "--quiet")
    assert result.exit_code == 0, result.output
    assert _saved_train_config(run_copy / "step-0000005")["device"] == "cpu"


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_stop_signal_saves_at_the_step_boundary_and_the_resumed_run_is_exact(
    tiny_train, trained_run, train_losses, monkeypatch, tmp_path, signum, code
):
    original = Trainer.train_step

    def signalled_in_step_three(self):
        if self.step == 2:
            os.kill(os.getpid(), signum)  # arrives inside the step, which still completes
        return original(self)

    out = tmp_path / "run"
    with monkeypatch.context() as mp:
        mp.setattr(Trainer, "train_step", signalled_in_step_three)
        result = tiny_train(out, "--max-steps", 4, "--log-interval", 1, "--eval-interval", 100)
    assert result.exit_code == code
    assert f"interrupted by {signal.Signals(signum).name}: saved {out / 'step-0000003'}" in result.stderr
    assert "Traceback" not in result.output
    assert [p.name for p in step_checkpoints(out)] == ["step-0000003"]

    resumed = tiny_train(out, "--resume", "--max-steps", 4)
    assert resumed.exit_code == 0, resumed.output
    # Same seed and settings as the shared run, so the resumed run must retrace it exactly.
    assert train_losses(out) == train_losses(trained_run.path)
    assert _state_dicts_equal(load_model(out), load_model(trained_run.path))


# --- generate ---------------------------------------------------------------------------------


def _generate(cli, checkpoint, *extra):
    result = cli("generate", "--checkpoint", checkpoint, "--prompt", PROMPT, "--max-new-tokens", 20, *extra)
    assert result.exit_code == 0, result.output
    return result.stdout


def test_generate_prints_the_prompt_and_the_models_sample(cli, trained_run):
    text = _generate(cli, trained_run.path, "--seed", 1)
    model = load_model(trained_run.path)
    ids = ByteTokenizer().encode(PROMPT)
    new = [int(t[0]) for t in stream_tokens(model, torch.tensor([ids]), 20, temperature=0.8, seed=1)]
    assert text == PROMPT + bytes(new).decode("utf-8", errors="replace") + "\n"


def test_generate_is_reproducible_with_a_seed(cli, trained_run):
    first = _generate(cli, trained_run.path, "--seed", 1)
    assert _generate(cli, trained_run.path, "--seed", 1) == first
    assert _generate(cli, trained_run.path, "--seed", 2) != first


def test_generate_from_a_run_folder_uses_its_latest_checkpoint(cli, trained_run):
    latest = _generate(cli, trained_run.path / "step-0000004", "--seed", 3)
    assert _generate(cli, trained_run.path, "--seed", 3) == latest


def test_temperature_zero_is_greedy(cli, trained_run):
    text = _generate(cli, trained_run.path, "--temperature", 0)
    assert _generate(cli, trained_run.path, "--temperature", 0) == text
    model = load_model(trained_run.path).eval()
    ids = ByteTokenizer().encode(PROMPT)
    with torch.no_grad():
        for _ in range(20):
            ids.append(int(model(torch.tensor([ids]))[0, -1].argmax()))
    assert text == ByteTokenizer().decode(ids) + "\n"


# --- eval and info ------------------------------------------------------------------------------


def test_eval_reports_loss_and_bits_per_byte(cli, trained_run, corpus):
    result = cli("eval", "--checkpoint", trained_run.path, "--data", corpus, "--device", "cpu")
    assert result.exit_code == 0, result.output
    record = last_json(result.stdout)
    val = load_corpus(corpus, ByteTokenizer()).split("val")
    loss, n_tokens = evaluate_loss(load_model(trained_run.path), val, 16, 16, torch.device("cpu"))
    assert record["tokens"] == n_tokens == (len(val) - 1) // 16 * 16  # the training block size
    assert record["loss"] == round(loss, 6)
    # Byte tokens: one token per byte, so bits per byte is nats per token over ln 2.
    assert record["bpb"] == pytest.approx(record["loss"] / math.log(2), abs=1e-5)


def test_eval_max_tokens_and_split(cli, trained_run, corpus):
    result = cli("eval", "--checkpoint", trained_run.path, "--data", corpus, "--split", "all", "--max-tokens", 64)
    assert result.exit_code == 0, result.output
    assert last_json(result.stdout)["tokens"] == 64
    assert last_json(result.stdout)["split"] == "all"


def test_spike_eval_prints_a_row_per_time_step_and_a_json_line(cli, trained_run, corpus):
    result = cli("spike-eval", trained_run.path, "--data", corpus, "--steps", "2,8", "--max-tokens", 64)
    assert result.exit_code == 0, result.output
    record = last_json(result.stdout)
    assert [r["steps"] for r in record["spiking"]] == [2, 8]
    assert all(r["tokens"] == 64 for r in record["spiking"])
    val = load_corpus(corpus, ByteTokenizer()).split("val")
    relu_loss, _ = evaluate_loss(load_model(trained_run.path), val, 16, 16, torch.device("cpu"), 64)
    assert record["relu"]["loss"] == pytest.approx(relu_loss, abs=1e-5)
    rows = [line.split() for line in result.stdout.splitlines() if re.match(r"\s*\d+ ", line)]
    assert [int(row[0]) for row in rows] == [2, 8]


def test_spike_eval_can_fine_tune_with_the_spikes_in_the_loop(cli, trained_run, corpus):
    args = ("--data", corpus, "--steps", "2", "--max-tokens", 64, "--finetune-steps", 3, "--finetune-t", 2)
    result = cli("spike-eval", trained_run.path, *args)
    assert result.exit_code == 0, result.output
    assert last_json(result.stdout)["finetune"]["steps"] == 3
    assert "fine-tuned 3 steps at T = 2" in result.stdout


def test_spike_eval_refuses_a_gpt_checkpoint(cli, corpus, tmp_path, assert_user_error):
    gpt = ("--model", "gpt", "--n-layer", 1, "--n-embd", 16, "--n-head", 2, "--block-size", 16, "--batch-size", 2)
    assert cli("train", "--data", corpus, *gpt, "--max-steps", 1, "--quiet", "--out", tmp_path / "g").exit_code == 0
    assert_user_error(cli("spike-eval", tmp_path / "g", "--data", corpus), "this needs bdh")


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (("--steps", "4,4"), "once"),
        (("--block-size", 0), "positive"),
        (("--calibration-tokens", -1), "positive"),
        (("--max-tokens", -5), ">= 0"),
        (("--finetune-steps", 1, "--finetune-lr", "nan"), "learning rate"),
    ],
)
def test_spike_eval_settings_that_cannot_work_are_one_line_errors(
    cli, trained_run, corpus, args, fragment, assert_user_error
):
    assert_user_error(cli("spike-eval", trained_run.path, "--data", corpus, *args), fragment)


def test_info_reports_the_models_parameter_count(cli, trained_run, read_metrics):
    result = cli("info", trained_run.path)
    assert result.exit_code == 0, result.output
    model = load_model(trained_run.path)
    match = re.search(r"^parameters\s+([\d,]+)$", result.stdout, re.MULTILINE)
    assert int(match.group(1).replace(",", "")) == sum(p.numel() for p in model.parameters())
    assert re.search(r"^step\s+4$", result.stdout, re.MULTILINE)
    assert re.search(r"^resumable\s+yes$", result.stdout, re.MULTILINE)
    last_val = [r for r in read_metrics(trained_run.path) if "val_loss" in r][-1]["val_loss"]
    assert f"val loss     {last_val:.4f} nats/token at step 4" in result.stdout


def test_info_skips_a_metrics_line_cut_short_by_a_crash(cli, run_copy, read_metrics):
    last_val = [r for r in read_metrics(run_copy) if "val_loss" in r][-1]["val_loss"]
    with open(run_copy / "metrics.jsonl", "a") as f:
        f.write('{"step": 4, "val_loss": 1.')
    result = cli("info", run_copy)
    assert result.exit_code == 0, result.output
    assert f"val loss     {last_val:.4f} nats/token at step 4" in result.stdout


# --- convert ---------------------------------------------------------------------------------------


def _reference_state_dict(model: BDH) -> dict:
    """The key names of the public reference code, as written by torch.compile."""
    names = {"embed.weight": "embed.weight", "encoder": "encoder_x", "encoder_v": "encoder_y"}
    names |= {"decoder": "decoder", "lm_head": "readout"}
    sd = model.state_dict()
    return {f"_orig_mod.{theirs}": sd[ours].clone() for theirs, ours in names.items()}


def test_convert_writes_a_loadable_checkpoint(cli, tmp_path):
    torch.manual_seed(0)
    model = BDH(BDHConfig(n_layer=2, n_embd=16, n_head=2, n_neuron=32, dropout=0.0))
    torch.save(_reference_state_dict(model), tmp_path / "ref.pt")
    result = cli("convert", tmp_path / "ref.pt", tmp_path / "converted", "--n-layer", 2)
    assert result.exit_code == 0, result.output
    assert _state_dicts_equal(load_model(tmp_path / "converted"), model)
    info = cli("info", tmp_path / "converted")
    assert info.exit_code == 0, info.output
    assert "model.n_layer      2" in info.stdout


def test_gpt_trains_generates_and_evaluates_through_the_same_cli(cli, corpus, tmp_path):
    gpt = ("--model", "gpt", "--n-layer", 1, "--n-embd", 16, "--n-head", 2)
    run = ("--batch-size", 4, "--block-size", 16, "--max-steps", 3, "--eval-tokens", 64, "--device", "cpu")
    result = cli("train", "--data", corpus, *gpt, *run, "--sample-tokens", 10, "--quiet", "--out", tmp_path / "g")
    assert result.exit_code == 0, result.output
    model = load_model(tmp_path / "g")
    assert model.architecture == "gpt" and model.config.n_layer == 1
    assert cli("generate", "--checkpoint", tmp_path / "g", "--max-new-tokens", 5).exit_code == 0
    record = last_json(cli("eval", "--checkpoint", tmp_path / "g", "--data", corpus).stdout)
    assert record["loss"] == pytest.approx(last_json(result.stdout)["val_loss"], rel=0.2)


def test_default_run_folder_is_named_after_the_model(cli, corpus, tmp_path):
    gpt = ("--model", "gpt", "--n-layer", 1, "--n-embd", 16, "--n-head", 2)
    run = ("--batch-size", 2, "--block-size", 16, "--max-steps", 1, "--eval-tokens", 32, "--sample-tokens", 0)
    assert cli("train", "--data", corpus, *gpt, *run, "--quiet").exit_code == 0
    assert step_checkpoints(tmp_path / "runs" / "gpt")


# --- bad input: exit code 2, one line on stderr, nothing changed ------------------------------------


class Workspace:
    """What a bad-input case may set up: files in tmp_path and a private copy of the trained run."""

    def __init__(self, tmp: Path, corpus: Path, trained: Path, tiny_args: tuple, make_word_tokenizer) -> None:
        self.tmp, self.corpus, self.trained, self.tiny_args = tmp, corpus, trained, tiny_args
        self.make_word_tokenizer = make_word_tokenizer

    def file(self, name: str, content: str | bytes) -> Path:
        path = self.tmp / name
        path.write_bytes(content.encode() if isinstance(content, str) else content)
        return path

    def train(self, *extra) -> list:
        return ["train", "--out", self.tmp / "out", *self.tiny_args, *extra]

    @cached_property
    def run(self) -> Path:
        return Path(shutil.copytree(self.trained, self.tmp / "run"))

    @property
    def latest(self) -> Path:
        return self.run / "step-0000004"

    def edit_config(self, architecture: str | None = None, **model) -> None:
        meta = json.loads((self.latest / "config.json").read_text())
        meta["architecture"] = architecture or meta["architecture"]
        meta["model"].update(model)
        (self.latest / "config.json").write_text(json.dumps(meta))

    def folder(self, name: str) -> Path:
        (self.tmp / name).mkdir()
        return self.tmp / name

    def replace_in_latest(self, name: str, content: bytes) -> Path:
        (self.latest / name).write_bytes(content)
        return self.run

    def tokenizer(self) -> Path:
        return self.make_word_tokenizer(self.tmp / "tokenizer.json")


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _empty(folder: Path) -> None:
    shutil.rmtree(folder)
    folder.mkdir()


def _torch_file(ws: Workspace, obj) -> Path:
    torch.save(obj, ws.tmp / "ref.pt")
    return ws.tmp / "ref.pt"


TRAIN_CASES = {
    "missing corpus": (lambda ws: ws.train("--data", ws.tmp / "nope.txt"), "corpus not found"),
    "empty corpus": (lambda ws: ws.train("--data", ws.file("c.txt", "")), "empty"),
    "whitespace corpus": (lambda ws: ws.train("--data", ws.file("c.txt", " \n\t\n  ")), "empty"),
    "train split below one block": (lambda ws: ws.train("--data", ws.file("c.txt", "x" * 12)), "train split"),
    "val split below one block": (
        lambda ws: ws.train("--data", ws.file("c.txt", "x" * 200), "--val-fraction", 0.05),
        "val split",
    ),
    "unknown preset": (lambda ws: ws.train("--preset", "gpt-17"), "invalid value for '--preset'"),
    "unknown model": (lambda ws: ws.train("--model", "rnn"), "invalid value for '--model'"),
    "BDH-only flag for GPT": (lambda ws: ws.train("--model", "gpt"), "n_neuron"),
    "zero layers": (lambda ws: ws.train("--n-layer", 0), "n_layer"),
    "negative width": (lambda ws: ws.train("--n-embd", -1), "n_embd"),
    "odd neurons": (lambda ws: ws.train("--n-neuron", 31), "n_neuron"),
    "dropout above one": (lambda ws: ws.train("--dropout", 1.5), "dropout"),
    "zero batch": (lambda ws: ws.train("--batch-size", 0), "batch_size"),
    "zero lr": (lambda ws: ws.train("--lr", 0), "lr"),
    "min_lr above lr": (lambda ws: ws.train("--lr", 1e-3, "--min-lr", 1e-2), "min_lr"),
    "unknown TOML key": (
        lambda ws: ws.train("--config", ws.file("c.toml", "[train]\nlearning_rate = 1\n")),
        "learning_rate",
    ),
    "unknown TOML table": (lambda ws: ws.train("--config", ws.file("c.toml", "[optim]\nlr = 1\n")), "optim"),
    "invalid TOML": (lambda ws: ws.train("--config", ws.file("c.toml", "[train\nlr = \n")), "invalid TOML"),
    "missing TOML": (lambda ws: ws.train("--config", ws.tmp / "none.toml"), "not found"),
    "out holds a run": (lambda ws: ["train", "--out", ws.run, *ws.tiny_args], "--resume"),
    "out is a file": (lambda ws: ["train", "--out", ws.file("out", "notes"), *ws.tiny_args], "not a folder"),
    "resume an empty folder": (
        lambda ws: ["train", "--out", ws.folder("empty"), *ws.tiny_args, "--resume"],
        "nothing to resume",
    ),
    "resume a missing folder": (
        lambda ws: ["train", "--out", ws.tmp / "none", *ws.tiny_args, "--resume"],
        "nothing to resume",
    ),
    "resume a corrupt trainer.pt": (
        lambda ws: ["train", "--out", ws.replace_in_latest("trainer.pt", b"junk"), *ws.tiny_args, "--resume"],
        "trainer.pt",
    ),
}


def _toml(ws: Workspace, text: str) -> Path:
    return ws.file("run.toml", text)


TRAIN_CASES |= {
    "a TOML number as a string": (lambda ws: ws.train("--config", _toml(ws, '[train]\nlr = "3e-3"\n')), "lr must be"),
    "a TOML table as a number": (lambda ws: ws.train("--config", _toml(ws, "model = 3\n")), "[model] must be a table"),
    "a TOML device as a number": (lambda ws: ws.train("--config", _toml(ws, "[train]\ndevice = 5\n")), "device"),
    "a TOML flag as a number": (lambda ws: ws.train("--config", _toml(ws, "[train]\ncompile = 1\n")), "compile"),
    "an unknown TOML key": (lambda ws: ws.train("--config", _toml(ws, "[train]\nlearning_rate = 1\n")), "unknown"),
    "an unknown TOML table": (lambda ws: ws.train("--config", _toml(ws, "[optimizer]\nlr = 1\n")), "unknown key"),
    "an unknown device": (lambda ws: ws.train("--device", "tpu"), "unknown device 'tpu'"),
    "mps on a machine without it": (lambda ws: ws.train("--device", "mps"), "no MPS device"),
}
if not torch.cuda.is_available():
    TRAIN_CASES["cuda on a machine without it"] = (lambda ws: ws.train("--device", "cuda"), "no CUDA device")

OTHER_CASES = {
    "generate a negative number of tokens": (
        lambda ws: ["generate", "--checkpoint", ws.run, "--max-new-tokens", -1],
        "max_new_tokens must be >= 0",
    ),
    "generate on mps without it": (lambda ws: ["generate", "--checkpoint", ws.run, "--device", "mps"], "no MPS"),
    "eval with a tokenizer of another vocabulary": (
        lambda ws: ["eval", "--checkpoint", ws.run, "--data", ws.corpus, "--tokenizer", ws.tokenizer()],
        "vocabulary mismatch",
    ),
    "eval on a corpus shorter than a window": (
        lambda ws: ["eval", "--checkpoint", ws.run, "--data", ws.file("c.txt", "short text"), "--split", "all"],
        "need more than 16 tokens",
    ),
    "eval with a val fraction of one": (
        lambda ws: ["eval", "--checkpoint", ws.run, "--data", ws.corpus, "--val-fraction", 1],
        "val-fraction",
    ),
    "eval with zero block size": (
        lambda ws: ["eval", "--checkpoint", ws.run, "--data", ws.corpus, "--block-size", 0],
        "block-size",
    ),
    "spike-eval with steps that are not integers": (
        lambda ws: ["spike-eval", ws.run, "--data", ws.corpus, "--steps", "4,many"],
        "comma-separated integers",
    ),
    "spike-eval with zero steps": (lambda ws: ["spike-eval", ws.run, "--data", ws.corpus, "--steps", "0"], "from 1 to"),
    "spike-eval of a missing checkpoint": (lambda ws: ["spike-eval", ws.tmp / "none", "--data", ws.corpus], "none"),
    "generate an empty prompt": (lambda ws: ["generate", "--checkpoint", ws.run, "--prompt", ""], "prompt is empty"),
    "generate at negative temperature": (
        lambda ws: ["generate", "--checkpoint", ws.run, "--temperature", -1],
        "temperature",
    ),
    "convert onto an existing folder": (
        lambda ws: ["convert", _torch_file(ws, {}), ws.run],
        "already exists",
    ),
    "convert random bytes": (
        lambda ws: ["convert", ws.file("ref.pt", bytes(range(256)) * 4), ws.tmp / "dst"],
        "corrupt or untrusted",
    ),
    "convert a state_dict with other keys": (
        lambda ws: ["convert", _torch_file(ws, {"fc.weight": torch.zeros(2, 2)}), ws.tmp / "dst"],
        "not a BDH reference checkpoint",
    ),
    "convert a missing file": (lambda ws: ["convert", ws.tmp / "none.pt", ws.tmp / "dst"], "not found"),
}

DAMAGES = {
    "corrupt config.json": (lambda ws: (ws.latest / "config.json").write_text("{not json"), "corrupt"),
    "truncated weights": (lambda ws: _truncate(ws.latest / "model.safetensors"), "truncated"),
    "missing weights": (lambda ws: (ws.latest / "model.safetensors").unlink(), "no model.safetensors"),
    "another architecture": (lambda ws: ws.edit_config(architecture="gpt9"), "gpt9"),
    "weights of other shapes": (lambda ws: ws.edit_config(n_embd=32), "does not match"),
    "impossible config": (lambda ws: ws.edit_config(n_neuron=31), "n_neuron"),
    "no checkpoint in the folder": (lambda ws: _empty(ws.run), "not a synaptorch checkpoint"),
}

READERS = {
    "generate": lambda ws: ["generate", "--checkpoint", ws.run, "--max-new-tokens", 5, "--seed", 1],
    "eval": lambda ws: ["eval", "--checkpoint", ws.run, "--data", ws.corpus],
    "info": lambda ws: ["info", ws.run],
}


@pytest.fixture
def workspace(tmp_path, corpus, trained_run, tiny_args, make_word_tokenizer) -> Workspace:
    return Workspace(tmp_path, corpus, trained_run.path, tiny_args, make_word_tokenizer)


@pytest.fixture
def check_refused(cli, workspace, snapshot, assert_user_error):
    """Run argv and check it is a user error that leaves the workspace as it was."""

    def check(argv, fragment) -> None:
        before = snapshot(workspace.tmp)
        assert_user_error(cli(*argv), fragment)
        assert snapshot(workspace.tmp) == before

    return check


@pytest.mark.parametrize("case", list(TRAIN_CASES | OTHER_CASES))
def test_bad_input_is_refused_and_changes_nothing(workspace, check_refused, case):
    make_argv, fragment = (TRAIN_CASES | OTHER_CASES)[case]
    check_refused(make_argv(workspace), fragment)


@pytest.mark.parametrize("reader", list(READERS))
@pytest.mark.parametrize("damage", list(DAMAGES))
def test_damaged_checkpoint_is_refused_and_left_alone(workspace, check_refused, damage, reader):
    damage_fn, fragment = DAMAGES[damage]
    damage_fn(workspace)
    check_refused(READERS[reader](workspace), fragment)


def test_missing_checkpoint_is_refused(cli, tmp_path, assert_user_error):
    assert_user_error(cli("info", tmp_path / "nowhere"), "not found")


def test_module_entry_point_reports_one_line_and_exit_code_2(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "synaptorch", "train", "--data", tmp_path / "nope.txt", "--out", tmp_path / "out"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"error: corpus not found: {tmp_path / 'nope.txt'}")
    assert proc.stdout == ""
    assert not (tmp_path / "out").exists()


def test_a_fading_state_trains_from_the_command_line_and_is_saved_with_the_model(cli, tiny_args, tmp_path):
    result = cli("train", "--out", tmp_path / "run", *tiny_args, "--max-steps", 2, "--state-decay", "0.9,0.99")
    assert result.exit_code == 0, result.output
    saved = json.loads((tmp_path / "run" / "step-0000002" / "config.json").read_text())
    assert saved["model"]["state_decay"] == [0.9, 0.99]


@pytest.mark.parametrize(
    ("value", "fragment"), [("0.9,x", "comma-separated"), ("0.9", "2 factors"), ("0.9,2", "(0, 1]")]
)
def test_a_state_decay_that_cannot_be_is_a_one_line_error(cli, tiny_args, tmp_path, assert_user_error, value, fragment):
    assert_user_error(cli("train", "--out", tmp_path / "run", *tiny_args, "--state-decay", value), fragment)
    assert not (tmp_path / "run").exists()
