import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from synaptorch.plasticity import hebbian_read, hebbian_write, hebbian_write_sequence


def test_write_by_hand_2x2():
    memory = torch.tensor([[[0.5, 0.0], [0.2, 1.0]]])
    key, value = torch.tensor([[1.0, 0.5]]), torch.tensor([[0.4, 1.0]])
    # g+ = 0.5, g- = 0.25, w_max = 1; k v^T = [[0.4, 1], [0.2, 0.5]], k^2 = [1, 0.25]
    # M_00 = 0.5 + 0.5 (1 - 0.5) 0.4 - 0.25 * 0.5 * 1    = 0.475
    # M_01 = 0   + 0.5 (1 - 0)   1   - 0.25 * 0   * 1    = 0.5
    # M_10 = 0.2 + 0.5 (1 - 0.2) 0.2 - 0.25 * 0.2 * 0.25 = 0.2675
    # M_11 = 1   + 0.5 (1 - 1)   0.5 - 0.25 * 1   * 0.25 = 0.9375
    new = hebbian_write(memory, key, value, gain_plus=0.5, gain_minus=0.25, w_max=1.0)
    torch.testing.assert_close(new, torch.tensor([[[0.475, 0.5], [0.2675, 0.9375]]]))


def test_defaults_are_the_papers():
    memory, key, value = torch.zeros(1, 1, 1), torch.ones(1, 1), torch.ones(1, 1)
    # From zero: M = g+ w_max k v = 0.01; then 0.01 + 0.01 (1 - 0.01) - 0.01 * 0.01 = 0.0198
    memory = hebbian_write(memory, key, value)
    assert memory.item() == pytest.approx(0.01)
    assert hebbian_write(memory, key, value).item() == pytest.approx(0.0198)


def test_read_is_memory_transposed_times_key():
    memory = torch.tensor([[[1.0, 2.0], [3.0, 4.0]]])
    # Rows are keys: key neuron 0 alone reads row 0; [0.5, 1] reads 0.5 * row 0 + row 1.
    torch.testing.assert_close(hebbian_read(memory, torch.tensor([[1.0, 0.0]])), torch.tensor([[1.0, 2.0]]))
    torch.testing.assert_close(hebbian_read(memory, torch.tensor([[0.5, 1.0]])), torch.tensor([[3.5, 5.0]]))
    memory, key = torch.randn(3, 4, 5), torch.randn(3, 4)
    torch.testing.assert_close(hebbian_read(memory, key), torch.einsum("bij,bi->bj", memory, key))


def test_batch_elements_are_written_independently():
    generator = torch.Generator().manual_seed(0)
    memory, key, value = (torch.rand(shape, generator=generator) for shape in ((3, 4, 5), (3, 4), (3, 5)))
    batched = hebbian_write(memory, key, value, 0.3, 0.2, 2.0)
    for b in range(3):
        alone = hebbian_write(memory[b : b + 1], key[b : b + 1], value[b : b + 1], 0.3, 0.2, 2.0)
        torch.testing.assert_close(batched[b : b + 1], alone)


@settings(max_examples=60, deadline=None)
@given(
    m=st.integers(1, 6),
    n=st.integers(1, 6),
    steps=st.integers(1, 12),
    gain_plus=st.floats(0, 0.5),
    gain_minus=st.floats(0, 0.5),
    w_max=st.floats(0.1, 5),
    seed=st.integers(0, 2**16),
)
def test_soft_bound_keeps_entries_in_zero_to_w_max(m, n, steps, gain_plus, gain_minus, w_max, seed):
    generator = torch.Generator().manual_seed(seed)
    keys, values = torch.rand(2, steps, m, generator=generator), torch.rand(2, steps, n, generator=generator)
    # Saturating inputs too: keys and values of exactly 1 push hardest against the bound.
    keys[0], values[0] = 1.0, 1.0
    memory = torch.rand(2, m, n, generator=generator, dtype=torch.float64) * w_max
    for t in range(steps):
        memory = hebbian_write(memory, keys[:, t].double(), values[:, t].double(), gain_plus, gain_minus, w_max)
        assert memory.min() >= 0 and memory.max() <= w_max * (1 + 1e-12)


def test_a_key_written_again_forgets_its_old_value():
    key = torch.tensor([[1.0, 0.0]])
    old, new = torch.tensor([[1.0, 0.0, 0.5]]), torch.tensor([[0.0, 1.0, 0.25]])

    def repeat(value, steps, memory=None):
        keys, values = key.expand(steps, 2)[None], value.expand(steps, 3)[None]
        return hebbian_write_sequence(keys, values, memory=memory, gain_plus=0.1, gain_minus=0.1)

    memory = repeat(new, 400, memory=repeat(old, 200))
    # Fixed point of M = M + g (1 - M) v - g M: M = v / (1 + v), whatever was stored before.
    torch.testing.assert_close(hebbian_read(memory, key), new / (1 + new), atol=1e-4, rtol=0)
    assert memory[0, 1].abs().max() == 0  # the silent key neuron's synapses were never touched


def test_masked_steps_leave_the_memory_unchanged():
    generator = torch.Generator().manual_seed(1)
    keys, values = torch.rand(2, 5, 4, generator=generator), torch.rand(2, 5, 3, generator=generator)
    mask = torch.tensor([[True, False, True, False, False], [False, False, False, False, False]])
    memory = hebbian_write_sequence(keys, values, mask, gain_plus=0.2, gain_minus=0.1)
    only_real = hebbian_write_sequence(keys[:1, [0, 2]], values[:1, [0, 2]], gain_plus=0.2, gain_minus=0.1)
    torch.testing.assert_close(memory[:1], only_real)
    assert memory[1].abs().max() == 0
    start = torch.rand(2, 4, 3, generator=generator)
    same = hebbian_write(start, keys[:, 0], values[:, 0], 0.5, 0.5, 1.0, mask=torch.tensor([False, False]))
    assert torch.equal(same, start)


def test_sequence_is_the_recurrence_of_single_writes():
    generator = torch.Generator().manual_seed(2)
    keys, values = torch.rand(3, 4, 5, generator=generator), torch.rand(3, 4, 6, generator=generator)
    memory = torch.zeros(3, 5, 6)
    for t in range(4):
        memory = hebbian_write(memory, keys[:, t], values[:, t])
    torch.testing.assert_close(hebbian_write_sequence(keys, values), memory)


def test_gradients_reach_keys_values_and_learned_plasticity():
    generator = torch.Generator().manual_seed(3)
    keys = torch.rand(2, 3, 4, generator=generator, requires_grad=True)
    values = torch.rand(2, 3, 4, generator=generator, requires_grad=True)
    gains = torch.tensor([0.1, 0.05, 1.0], requires_grad=True)
    memory = hebbian_write_sequence(keys, values, None, None, gains[0], gains[1], gains[2])
    hebbian_read(memory, torch.ones(2, 4)).sum().backward()
    for grad in (keys.grad, values.grad, gains.grad):
        assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0
