import itertools
import math

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from synaptorch.errors import ConfigError
from synaptorch.train.config import PRESETS, TrainConfig, build_run_config
from synaptorch.train.trainer import learning_rate


@pytest.fixture
def toml(tmp_path):
    def write(text: str):
        path = tmp_path / "config.toml"
        path.write_text(text)
        return path

    return write


def test_flags_override_toml_which_overrides_the_preset(toml):
    path = toml("[model]\nn_layer = 2\nn_neuron = 64\n[train]\nlr = 1e-3\nbatch_size = 8\n")
    run = build_run_config(
        "cpu-tiny",
        path,
        model_overrides={"n_layer": 3, "n_embd": None},
        train_overrides={"batch_size": 2, "lr": None},
    )
    preset = PRESETS["bdh"]["cpu-tiny"]
    assert run.model.n_layer == 3  # flag over TOML
    assert run.model.n_neuron == 64  # TOML over preset
    assert run.model.n_embd == preset["model"]["n_embd"]  # a None flag is no override
    assert run.train.batch_size == 2
    assert run.train.lr == 1e-3
    assert run.train.max_steps == preset["train"]["max_steps"]
    assert run.train.warmup_steps == TrainConfig().warmup_steps  # set nowhere: the default


@pytest.mark.parametrize(
    ("flag", "in_file", "default", "expected"),
    [
        ("paper-25m", "cpu-tiny", "cpu-tiny", "paper-25m"),
        (None, "paper-25m", "cpu-tiny", "paper-25m"),
        (None, None, "paper-25m", "paper-25m"),
        ("cpu-tiny", None, "paper-25m", "cpu-tiny"),
    ],
)
def test_which_preset_applies(toml, flag, in_file, default, expected):
    path = toml(f'preset = "{in_file}"\n' if in_file else "")
    run = build_run_config(flag, path, default_preset=default)
    assert run.model.n_neuron == PRESETS["bdh"][expected]["model"]["n_neuron"]
    assert run.train.lr == PRESETS["bdh"][expected]["train"]["lr"]


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("[train]\nlearning_rate = 1e-3\n", "learning_rate"),
        ("[model]\nwidth = 3\n", "width"),
        ("[optimizer]\nlr = 1\n", "optimizer"),
        ('architecture = "gpt9"\n', "gpt9"),
        ('preset = "huge"\n', "huge"),
        ("[train\n", "invalid TOML"),
        ("[model]\nn_neuron = 33\n", "even"),
    ],
)
def test_bad_toml_is_a_config_error(toml, text, fragment):
    with pytest.raises(ConfigError, match=fragment):
        build_run_config(None, toml(text))


def test_missing_toml_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        build_run_config(None, tmp_path / "none.toml")


@pytest.mark.parametrize(
    "bad",
    [
        {"batch_size": 0},
        {"block_size": -4},
        {"max_steps": 2.5},
        {"grad_accum": True},
        {"keep_last": 0},
        {"warmup_steps": -1},
        {"eval_tokens": -1},
        {"lr": 0.0},
        {"lr": math.nan},
        {"lr": 1e-3, "min_lr": 1e-2},
        {"min_lr": -1e-5},
        {"beta1": 1.0},
        {"beta2": -0.1},
        {"weight_decay": -0.1},
        {"grad_clip": -1.0},
        {"max_time": -1.0},
        {"val_fraction": 0.0},
        {"val_fraction": 1.0},
        {"device": "tpu"},
    ],
)
def test_impossible_train_settings_are_refused(bad):
    with pytest.raises(ConfigError):
        TrainConfig(**bad)


@pytest.mark.parametrize("ok", [{"min_lr": 3e-3, "lr": 3e-3}, {"warmup_steps": 0}, {"device": "cuda:1"}])
def test_edge_settings_are_accepted(ok):
    assert TrainConfig(**ok).to_dict().items() >= ok.items()


def test_train_config_dict_round_trip_and_unknown_keys():
    cfg = TrainConfig(lr=1e-2, batch_size=3, data="corpus.txt")
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ConfigError, match="bogus"):
        TrainConfig.from_dict({**cfg.to_dict(), "bogus": 1})


# --- the learning-rate schedule -------------------------------------------------------------


@st.composite
def schedules(draw) -> TrainConfig:
    lr = draw(st.floats(1e-6, 1.0))
    warmup = draw(st.integers(0, 200))
    return TrainConfig(
        lr=lr,
        min_lr=lr * draw(st.floats(0.0, 1.0)),
        warmup_steps=warmup,
        max_steps=warmup + draw(st.integers(1, 2000)),
    )


@given(schedules())
def test_warmup_rises_linearly_to_lr(cfg):
    assume(cfg.warmup_steps > 0)
    lrs = [learning_rate(s, cfg) for s in range(cfg.warmup_steps)]
    increments = [b - a for a, b in itertools.pairwise([0.0, *lrs])]
    assert increments == pytest.approx([cfg.lr / cfg.warmup_steps] * cfg.warmup_steps, rel=1e-9)
    assert lrs[-1] == pytest.approx(cfg.lr, rel=1e-12)
    assert learning_rate(cfg.warmup_steps, cfg) == pytest.approx(cfg.lr, rel=1e-12)


@given(schedules())
def test_cosine_decays_monotonically_from_lr_to_min_lr(cfg):
    lrs = [learning_rate(s, cfg) for s in range(cfg.warmup_steps, cfg.max_steps + 1)]
    tolerance = 1e-12 * cfg.lr
    assert lrs[0] == pytest.approx(cfg.lr, rel=1e-12)
    assert all(b <= a + tolerance for a, b in itertools.pairwise(lrs))
    assert all(cfg.min_lr - tolerance <= x <= cfg.lr + tolerance for x in lrs)
    assert lrs[-1] == pytest.approx(cfg.min_lr, rel=1e-12, abs=tolerance)
    # Past max_steps (a resumed run with a shorter schedule) the rate stays at min_lr.
    assert learning_rate(cfg.max_steps + 17, cfg) == pytest.approx(cfg.min_lr, rel=1e-12, abs=tolerance)


@pytest.mark.parametrize("size", ["cpu-tiny", "paper-25m"])
def test_gpt_presets_match_bdh_by_parameters_and_by_flops(size):
    bdh = build_run_config(size, architecture="bdh")
    same_params = build_run_config(size, architecture="gpt").model
    same_flops = build_run_config(f"{size}-flops", architecture="gpt").model
    assert same_params.n_params == pytest.approx(bdh.model.n_params, rel=0.05)
    block = bdh.train.block_size
    assert same_flops.flops_per_token(block) == pytest.approx(bdh.model.flops_per_token(block), rel=0.05)
    # Equal parameters do not mean equal compute: that is why both presets exist.
    assert same_params.flops_per_token(block) < 0.5 * bdh.model.flops_per_token(block)


def test_architecture_comes_from_the_flag_else_the_toml_file(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text('architecture = "gpt"\n[model]\nn_layer = 3\n')
    assert build_run_config(None, path, default_preset="cpu-tiny").architecture == "gpt"
    flagged = build_run_config(None, path, architecture="bdh")
    assert flagged.architecture == "bdh" and flagged.model.n_layer == 3


def test_a_resumed_gpt_run_reads_gpt_settings_from_a_config_file(tmp_path):
    from synaptorch.train.config import RunRequest, resumed_run_config

    run = build_run_config("cpu-tiny", architecture="gpt")
    meta = {"architecture": "gpt", "model": run.model.to_dict(), "train": run.train.to_dict()}
    toml = tmp_path / "run.toml"
    toml.write_text(f"[model]\nmlp_ratio = {run.model.mlp_ratio}\n[train]\nmax_steps = 9\n")
    resumed = resumed_run_config(meta, RunRequest(toml_path=toml))
    assert resumed.architecture == "gpt" and resumed.train.max_steps == 9
    toml.write_text("[model]\nmlp_ratio = 2\n")
    with pytest.raises(ConfigError, match="--mlp-ratio cannot change on resume"):
        resumed_run_config(meta, RunRequest(toml_path=toml))
