"""What only a CUDA device can check: the models' forms agree there, train in its precision, and
generate without host syncs by default. Skipped without one; tests/models covers the CPU."""

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from synaptorch.device import autocast_for, precision_for
from synaptorch.models.bdh import BDH, BDHConfig
from synaptorch.models.gpt import GPT, GPTConfig

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

CUDA = torch.device("cuda")


@pytest.fixture(autouse=True)
def float32_matmuls():
    """fp32 comparisons need fp32 matmuls, not TF32, whatever was set before."""
    precision = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")
    yield
    torch.set_float32_matmul_precision(precision)


def tiny_bdh() -> BDH:
    torch.manual_seed(0)
    model = BDH(BDHConfig(n_layer=3, n_embd=32, n_head=2, n_neuron=64, vocab_size=256, dropout=0.0))
    model.chunk_size = 16  # several chunks of the chunked attention in every sequence below
    return model.to(CUDA).eval()


def tiny_gpt() -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig(n_layer=2, n_embd=32, n_head=4, vocab_size=256)).to(CUDA).eval()


def tokens(batch: int, length: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (batch, length), generator=torch.Generator().manual_seed(seed)).to(CUDA)


def check_forms_agree(model: BDH | GPT, idx: torch.Tensor) -> None:
    """Parallel form = recurrent form in several splits = prefill then one step per token."""
    length = idx.shape[1]
    with torch.no_grad():
        parallel = model(idx)
        for cuts in ([37], [1, 2, 50, length - 1], list(range(16, length, 16))):
            chunks, state = [], None
            for start, end in itertools.pairwise([0, *cuts, length]):
                logits, state = model.forward_recurrent(idx[:, start:end], state)
                chunks.append(logits)
            torch.testing.assert_close(torch.cat(chunks, 1), parallel, rtol=1e-4, atol=1e-4)
        _, state = model.forward_recurrent(idx[:, :60])
        stepped = []
        for t in range(60, length):
            logits, state = model.step(idx[:, t], state)
            stepped.append(logits)
    torch.testing.assert_close(torch.stack(stepped, 1), parallel[:, 60:], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("make", [tiny_bdh, tiny_gpt])
def test_parallel_recurrent_and_step_agree_in_fp32(make):
    check_forms_agree(make(), tokens(2, 100))


def test_the_sparse_step_agrees_when_asked_for():
    model = tiny_bdh()
    model.sparse_below = 1.01  # every layer of one sequence takes the sparse path
    check_forms_agree(model, tokens(1, 100, seed=1))


@pytest.mark.parametrize("make", [tiny_bdh, tiny_gpt])
def test_bf16_training_steps_lower_the_loss_with_finite_gradients(make):
    if precision_for(CUDA).dtype != torch.bfloat16:
        pytest.skip("bf16 autocast needs an Ampere or later GPU")
    model = make().train()
    idx = tokens(4, 129, seed=2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(20):
        with autocast_for(CUDA):
            logits = model(idx[:, :-1])
        loss = F.cross_entropy(logits.float().flatten(0, 1), idx[:, 1:].flatten())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        for name, p in model.named_parameters():
            assert p.grad is not None and torch.isfinite(p.grad).all(), name
        optimizer.step()
        losses.append(loss.item())
    assert all(math.isfinite(loss) for loss in losses)
    assert losses[-1] < 0.7 * losses[0]


def test_compiled_step_equals_the_eager_step_without_the_cpp_wrapper(monkeypatch):
    compile_options = []
    compile = torch.compile

    def recording_compile(fn, **kwargs):
        compile_options.append(kwargs.get("options"))
        return compile(fn, **kwargs)

    monkeypatch.setattr(torch, "compile", recording_compile)
    model = tiny_bdh()
    state, compiled_state = model.initial_state(2), model.initial_state(2)
    for token in tokens(3, 2, seed=3):
        model.compile_step(False)
        expected, _ = model.step(token, state)
        model.compile_step()
        got, _ = model.step(token, compiled_state)
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    for got, want in zip(compiled_state.rho, state.rho, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    assert compile_options == [None]


def test_sparse_generation_is_off_by_default_on_cuda():
    torch.manual_seed(0)
    model = BDH(BDHConfig(n_layer=2, n_embd=256, n_head=2, n_neuron=4096, dropout=0.0)).eval()  # 2**21 synapses
    assert model.sparse_below > 0  # on the CPU a state this large takes the sparse path
    model.to(CUDA)
    assert model.sparse_below == 0
    state = model.initial_state(1)
    first, *more = tokens(4, 1, seed=4)
    model.step(first, state)  # builds the phasor table, a copy from the host
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for token in more:
            model.step(token, state)
        model.sparse_below = 0.5
        with pytest.raises(RuntimeError, match="synchroniz"):  # the sparse path counts firing neurons on the host
            model.step(first, state)
    finally:
        torch.cuda.set_sync_debug_mode("default")
