"""--precision: the choice `auto` makes, the checks of a precision a device lacks, and bf16 autocast
training that follows fp32 within a stated tolerance while weights, optimizer and synapse state
stay in float32."""

import pytest
import torch
import torch.nn.functional as F

from synaptorch import device as device_module
from synaptorch.device import BF16, FP16, FP32, bf16_probe, cpu_has_bf16, precision_for
from synaptorch.errors import ConfigError
from synaptorch.models.bdh import BDH, BDHConfig
from synaptorch.models.gpt import GPT, GPTConfig
from synaptorch.train.config import RunRequest, TrainConfig, resumed_run_config
from synaptorch.train.trainer import Trainer, evaluate_loss

CPU = torch.device("cpu")
CUDA = torch.device("cuda")

# bf16 keeps 8 bits of mantissa: one rounding is 0.4% relative. After the few layers of a tiny
# model the loss stays within 1% of fp32's and each weight's gradient points the same way (cosine
# similarity) within 1% with a norm within 5%.
LOSS_RTOL = 1e-2
GRAD_COSINE = 0.99
GRAD_NORM_RTOL = 5e-2


@pytest.fixture
def bf16_cpu(monkeypatch):
    """A CPU with bf16 instructions, whatever this one has: torch runs bf16 autocast on any CPU."""
    monkeypatch.setattr(device_module, "cpu_has_bf16", lambda: True)


# --- the choice of precision --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("has_bf16", "pays", "expected"), [(True, True, BF16), (True, False, FP32), (False, True, FP32)]
)
def test_auto_takes_bf16_on_the_cpu_only_with_the_instructions_and_a_faster_probe(
    monkeypatch, has_bf16, pays, expected
):
    monkeypatch.setattr(device_module, "cpu_has_bf16", lambda: has_bf16)
    asked = []

    def probe() -> bool:
        asked.append(True)
        return pays

    assert precision_for(CPU, "auto", probe) == expected
    assert asked == ([True] if has_bf16 else [])  # a CPU without the instructions is not timed
    assert precision_for(CPU, "auto") == FP32  # nothing to time: the path that needs no measuring


def test_explicit_precisions_on_the_cpu(monkeypatch):
    monkeypatch.setattr(device_module, "cpu_has_bf16", lambda: True)
    assert precision_for(CPU, "fp32") == FP32
    assert precision_for(CPU, "bf16", lambda: False) == BF16  # asked for, not timed
    with pytest.raises(ConfigError, match="fp16 needs a CUDA device"):
        precision_for(CPU, "fp16")
    monkeypatch.setattr(device_module, "cpu_has_bf16", lambda: False)
    with pytest.raises(ConfigError, match="neither AVX512-BF16 nor AMX"):
        precision_for(CPU, "bf16")
    with pytest.raises(ConfigError, match="unknown precision 'fp64'"):
        precision_for(CPU, "fp64")


@pytest.mark.parametrize("bf16", [True, False])
def test_cuda_takes_bf16_where_supported_else_fp16_with_a_scaled_loss(monkeypatch, bf16):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: bf16)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Tesla V100")
    assert precision_for(CUDA, "auto") == (BF16 if bf16 else FP16)
    assert precision_for(CUDA, "fp16") == FP16 and FP16.scale_loss and not BF16.scale_loss
    assert precision_for(CUDA, "fp32") == FP32
    if bf16:
        assert precision_for(CUDA, "bf16") == BF16
    else:
        with pytest.raises(ConfigError, match="Tesla V100 has no bf16"):
            precision_for(CUDA, "bf16")


@pytest.mark.parametrize(
    ("flags", "expected"),
    [("fpu avx512f avx512_bf16", True), ("fpu amx_bf16 amx_tile", True), ("fpu avx2 avx512f avx512_vnni", False)],
)
def test_cpu_bf16_instructions_are_read_from_the_cpu_flags(tmp_path, flags, expected):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nmodel name\t: Some CPU\nflags\t\t: {flags}\n")
    assert cpu_has_bf16(cpuinfo) is expected


def test_the_probe_is_timed_once_and_leaves_the_model_as_it_was(monkeypatch):
    timed = []
    monkeypatch.setattr(device_module, "_PROBED", {})
    monkeypatch.setattr(device_module, "_bf16_faster", lambda model, idx: timed.append(idx.shape) or True)
    model = tiny_bdh()
    idx = torch.randint(0, 256, (2, 16))
    assert bf16_probe(model, idx)() and bf16_probe(model, idx)()
    assert bf16_probe(tiny_bdh(), idx)()  # another model of the same configuration
    assert timed == [idx.shape]
    bf16_probe(model, idx[:1])()
    assert timed == [idx.shape, idx[:1].shape]


def test_the_timed_probe_draws_no_randomness_and_leaves_no_gradients(monkeypatch):
    monkeypatch.setattr(device_module, "_PROBED", {})
    model, idx = tiny_bdh(dropout=0.5).train(), torch.randint(0, 256, (2, 16))
    state = torch.get_rng_state()
    decided = bf16_probe(model, idx)()
    assert isinstance(decided, bool)
    assert torch.equal(torch.get_rng_state(), state)
    assert model.training and all(p.grad is None for p in model.parameters())


# --- the setting -------------------------------------------------------------------------------


def test_the_precision_setting_is_checked_and_may_change_on_resume():
    assert TrainConfig().precision == "auto"
    assert TrainConfig(precision="bf16").precision == "bf16"
    with pytest.raises(ConfigError, match="unknown precision 'half'"):
        TrainConfig(precision="half")
    meta = {"architecture": "bdh", "model": BDHConfig().to_dict(), "train": TrainConfig(precision="fp32").to_dict()}
    resumed = resumed_run_config(meta, RunRequest(train={"precision": "bf16", "device": "cpu"}))
    assert resumed.train.precision == "bf16"


def test_the_flag_is_in_the_help_and_a_bad_value_is_one_line(cli, assert_user_error, tiny_args, tmp_path):
    help_text = cli("train", "--help").output
    assert "--precision" in help_text and "AVX512-BF16" in help_text
    result = cli("train", *tiny_args, "--out", tmp_path / "run", "--precision", "fp64")
    assert_user_error(result, "unknown precision 'fp64'")
    result = cli("train", *tiny_args, "--out", tmp_path / "run", "--precision", "fp16")
    assert_user_error(result, "fp16 needs a CUDA device")
    assert not (tmp_path / "run").exists()


def test_the_toml_key_sets_the_precision(cli, tiny_args, tmp_path, read_metrics):
    config = tmp_path / "run.toml"
    config.write_text('[train]\nprecision = "fp32"\nmax_steps = 2\neval_interval = 2\n')
    result = cli("train", *tiny_args, "--config", config, "--out", tmp_path / "run")
    assert result.exit_code == 0, result.output
    assert [r["precision"] for r in read_metrics(tmp_path / "run") if "val_loss" in r] == ["fp32"]


# --- training in bf16 ----------------------------------------------------------------------------


def tiny_bdh(dropout: float = 0.0) -> BDH:
    torch.manual_seed(0)
    return BDH(BDHConfig(n_layer=2, n_embd=32, n_head=2, n_neuron=64, dropout=dropout))


def tiny_gpt() -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig(n_layer=2, n_embd=32, n_head=2, dropout=0.0))


def loss_and_grads(model, idx, precision):
    model.zero_grad(set_to_none=True)
    with device_module.autocast_for(CPU, precision):
        logits = model(idx[:, :-1])
    loss = F.cross_entropy(logits.float().flatten(0, 1), idx[:, 1:].flatten())
    loss.backward()
    return loss.item(), {name: p.grad.clone() for name, p in model.named_parameters()}


@pytest.mark.parametrize(("make", "chunk"), [(tiny_bdh, None), (tiny_bdh, 16), (tiny_gpt, None)])
def test_bf16_loss_and_gradients_follow_fp32(make, chunk):
    model = make()
    model.chunk_size = chunk  # BDH's chunked attention with its float32 state across 4 chunks
    idx = torch.randint(0, 256, (4, 65), generator=torch.Generator().manual_seed(1))
    loss32, grads32 = loss_and_grads(model, idx, FP32)
    loss16, grads16 = loss_and_grads(model, idx, BF16)
    assert loss16 == pytest.approx(loss32, rel=LOSS_RTOL)
    assert loss16 != loss32  # bf16 did run
    for name, g32 in grads32.items():
        g16 = grads16[name]
        assert g16.dtype == torch.float32, name  # gradients of the float32 master weights
        cosine = F.cosine_similarity(g16.flatten(), g32.flatten(), dim=0)
        assert cosine > GRAD_COSINE, (name, cosine)
        assert g16.norm() == pytest.approx(g32.norm(), rel=GRAD_NORM_RTOL), name


def test_bdh_recurrent_form_keeps_its_synapse_state_in_float32_under_bf16():
    model = tiny_bdh().eval()
    idx = torch.randint(0, 256, (2, 48), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        parallel = model(idx)
        state = None
        with device_module.autocast_for(CPU, BF16):
            chunks = []
            for part in idx.split(16, dim=1):
                logits, state = model.forward_recurrent(part, state)
                chunks.append(logits.float())
    assert all(rho.dtype == torch.float32 for rho in state.rho)
    assert chunks[0].dtype == torch.float32
    torch.testing.assert_close(torch.cat(chunks, 1), parallel, rtol=0.05, atol=0.05)


def test_a_bf16_run_keeps_float32_weights_and_optimizer_and_evaluates_in_bf16(
    bf16_cpu, corpus, tmp_path, tiny_run, read_metrics
):
    trainer = Trainer(tiny_run(corpus, precision="bf16"), tmp_path / "run", progress=False)
    assert trainer.precision == BF16 and not trainer.scaler.is_enabled()
    result = trainer.fit()
    assert result["precision"] == "bf16"
    assert {r["precision"] for r in read_metrics(tmp_path / "run") if "val_loss" in r} == {"bf16"}
    assert all(p.dtype == torch.float32 for p in trainer.model.parameters())
    moments = trainer.optimizer.state_dict()["state"].values()
    assert moments and all(m["exp_avg"].dtype == m["exp_avg_sq"].dtype == torch.float32 for m in moments)
    # The run's evaluations are scored in its precision.
    val, cfg = trainer.corpus.split("val"), trainer.cfg
    in_bf16 = evaluate_loss(trainer.model, val, cfg.block_size, cfg.batch_size, CPU, cfg.eval_tokens, precision=BF16)
    in_fp32 = evaluate_loss(trainer.model, val, cfg.block_size, cfg.batch_size, CPU, cfg.eval_tokens, precision=FP32)
    assert trainer.evaluate()["val_loss"] == in_bf16[0] != in_fp32[0]
    assert in_bf16[0] == pytest.approx(in_fp32[0], rel=LOSS_RTOL)


@pytest.mark.parametrize("pays", [True, False])
def test_auto_in_the_trainer_follows_the_probe(bf16_cpu, monkeypatch, corpus, tmp_path, tiny_run, pays):
    monkeypatch.setattr(device_module, "_PROBED", {})
    probed = []
    monkeypatch.setattr(device_module, "_bf16_faster", lambda model, idx: probed.append(tuple(idx.shape)) or pays)
    trainer = Trainer(tiny_run(corpus, grad_accum=2), tmp_path / "run", progress=False)
    assert trainer.precision == (BF16 if pays else FP32)
    assert probed == [(4, 16)]  # one micro-batch of the run
    trainer.close()


def test_a_resumed_run_may_change_its_precision(bf16_cpu, corpus, tmp_path, tiny_run, read_metrics):
    Trainer(tiny_run(corpus, precision="fp32", max_steps=3), tmp_path / "run", progress=False).fit()
    request = RunRequest(train={"precision": "bf16", "max_steps": 6})
    resumed = Trainer.resume(tmp_path / "run", request, progress=False)
    assert resumed.precision == BF16
    resumed.fit()
    assert [r["precision"] for r in read_metrics(tmp_path / "run") if "val_loss" in r] == ["fp32", "bf16"]


def test_a_resume_under_auto_keeps_the_precision_auto_chose_without_timing_again(
    bf16_cpu, monkeypatch, corpus, tmp_path, tiny_run
):
    monkeypatch.setattr(device_module, "_PROBED", {})
    monkeypatch.setattr(device_module, "_bf16_faster", lambda model, idx: True)
    Trainer(tiny_run(corpus, max_steps=3), tmp_path / "run", progress=False).fit()
    probed = []
    monkeypatch.setattr(device_module, "_PROBED", {})
    monkeypatch.setattr(device_module, "_bf16_faster", lambda model, idx: probed.append(idx.shape) or False)
    resumed = Trainer.resume(tmp_path / "run", RunRequest(train={"max_steps": 6}), progress=False)
    assert resumed.precision == BF16 and probed == []  # a timing could now fall the other way
    resumed.close()
    monkeypatch.setattr(device_module, "cpu_has_bf16", lambda: False)  # a machine that cannot run it decides anew
    elsewhere = Trainer.resume(tmp_path / "run", RunRequest(train={"max_steps": 6}), progress=False)
    assert elsewhere.precision == FP32
    elsewhere.close()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_fp16_on_cuda_trains_with_a_gradient_scaler(corpus, tmp_path, tiny_run):
    trainer = Trainer(tiny_run(corpus, device="cuda", precision="fp16"), tmp_path / "run", progress=False)
    assert trainer.precision == FP16 and trainer.scaler.is_enabled()
    trainer.fit()
    assert all(p.dtype == torch.float32 for p in trainer.model.parameters())
    assert trainer.scaler.get_scale() > 0
