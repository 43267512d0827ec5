import pytest
import torch
import torch.nn.functional as F

from synaptorch.data.images import load_fashion_mnist
from synaptorch.errors import ConfigError, DataError
from synaptorch.memory.association import (
    N_SYMBOLS,
    NO_SYMBOL,
    AssociationTask,
    AssociationTrainConfig,
    EncoderConfig,
    HMemAssociation,
    HMemAssociationConfig,
    ImageEncoder,
    LSTMAssociation,
    LSTMAssociationConfig,
    association_write,
    evaluate_association,
    pretrain_encoder,
    symbol_codes,
    train_association,
)
from synaptorch.plasticity import hebbian_write_sequence


@pytest.fixture(scope="module")
def train_split():
    return load_fashion_mnist("train")


@pytest.fixture(scope="module")
def test_split():
    return load_fashion_mnist("test")


@pytest.fixture(scope="module")
def frozen_encoder(train_split):
    torch.manual_seed(0)
    encoder = ImageEncoder()
    pretrain_encoder(encoder, *train_split, steps=100, batch_size=64)
    return encoder.requires_grad_(False)


@pytest.mark.parametrize("delay", [0, 3])
def test_task_shapes(test_split, delay):
    batch = AssociationTask(*test_split, delay=delay).sample(7)
    frames = 3 * (delay + 1)
    assert batch.frames.shape == (7, frames, 1, 28, 28) and batch.frames.dtype == torch.float32
    assert batch.symbols.shape == (7, frames) and batch.symbols.dtype == torch.long
    assert batch.query.shape == (7, 1, 28, 28) and batch.query.dtype == torch.float32
    assert batch.target.shape == (7,) and batch.target.dtype == torch.long
    assert batch.frame_index.shape == (7, frames) and batch.query_index.shape == (7,)


def test_pairs_noise_query_and_target(test_split):
    images, labels = test_split
    delay = 2
    batch = AssociationTask(images, labels, delay=delay, seed=3).sample(200)
    pair = torch.arange(9) % (delay + 1) == 0  # frames 0, 3 and 6 show the pairs
    index = batch.frame_index[:, pair]
    classes = labels[index].long()
    assert all(len(set(row)) == 3 for row in classes.tolist())
    assert all(len(set(row)) == 3 for row in batch.symbols[:, pair].tolist())
    assert ((batch.symbols[:, pair] >= 0) & (batch.symbols[:, pair] < N_SYMBOLS)).all()
    torch.testing.assert_close(batch.frames[:, pair, 0], images[index].float() / 255)
    torch.testing.assert_close(batch.query[:, 0], images[batch.query_index].float() / 255)

    query_class = labels[batch.query_index].long()
    asked = classes == query_class[:, None]  # (B, 3): the one pair of the query's class
    assert asked.sum(1).eq(1).all()
    assert torch.equal(batch.target, batch.symbols[:, pair][asked])
    assert not (index == batch.query_index[:, None]).any()  # another image of that class

    noise = batch.frames[:, ~pair]
    assert (batch.symbols[:, ~pair] == NO_SYMBOL).all() and (batch.frame_index[:, ~pair] == -1).all()
    assert noise.min() >= 0 and noise.max() <= 1
    assert abs(noise.mean().item() - 0.5) < 0.01 and abs(noise.std().item() - 12**-0.5) < 0.01  # uniform
    assert len(set(asked.float().argmax(1).tolist())) == 3  # every pair gets asked about


def test_task_is_deterministic_per_seed(test_split):
    first, again = (AssociationTask(*test_split, delay=1, seed=5).sample(4) for _ in range(2))
    other = AssociationTask(*test_split, delay=1, seed=6).sample(4)
    for a, b in zip(first, again, strict=True):
        assert torch.equal(a, b)
    assert not torch.equal(first.frames, other.frames)
    generator = torch.Generator().manual_seed(5)
    assert torch.equal(AssociationTask(*test_split, delay=1).sample(4, generator).frames, first.frames)


def test_task_rejects_what_it_cannot_draw_from():
    images = torch.zeros(6, 28, 28, dtype=torch.uint8)
    with pytest.raises(DataError, match="3 classes"):
        AssociationTask(images, torch.tensor([0, 0, 1, 1, 1, 1]))
    with pytest.raises(DataError, match="at least two images"):
        AssociationTask(images, torch.tensor([0, 0, 1, 1, 2, 3]))
    with pytest.raises(DataError, match="28, 28"):
        AssociationTask(torch.zeros(6, 14, 14, dtype=torch.uint8), torch.tensor([0, 0, 1, 1, 2, 2]))
    with pytest.raises(ConfigError, match="at most 10"):
        AssociationTask(images, torch.tensor([0, 0, 1, 1, 2, 2]), pairs=11)
    with pytest.raises(ConfigError, match="delay"):
        AssociationTask(images, torch.tensor([0, 0, 1, 1, 2, 2]), delay=-1)


def test_symbol_codes_give_no_symbol_the_zero_vector():
    codes = symbol_codes(torch.tensor([3, NO_SYMBOL, 0]))
    assert codes.shape == (3, N_SYMBOLS)
    assert codes[0].argmax() == 3 and codes[0].sum() == 1 and codes[2, 0] == 1
    assert (codes[1] == 0).all()


def test_write_folding_noise_frames_equals_writing_each_frame():
    generator = torch.Generator().manual_seed(0)
    b, t, m = 3, 9, 6
    keys = torch.rand(b, t, m, generator=generator).requires_grad_()
    values = torch.rand(b, t, m, generator=generator)
    present = torch.zeros(b, t, dtype=torch.bool)
    present[:, [1, 4]] = True  # noise first, between and last
    present[1, 6] = True  # one sequence with a symbol where the others have none
    gains = (0.1, 0.2, 1.0)
    folded = association_write(keys, values, present, *gains)
    plain = hebbian_write_sequence(keys, values * present.unsqueeze(-1), None, None, *gains)
    torch.testing.assert_close(folded, plain)
    (grad_folded,) = torch.autograd.grad(folded.square().sum(), keys)
    (grad_plain,) = torch.autograd.grad(plain.square().sum(), keys)
    torch.testing.assert_close(grad_folded, grad_plain)
    # Noise frames do write: without them the memory would be larger, by their depression.
    rows, pairs = [0, 2], [1, 4]
    without_noise = association_write(keys[rows][:, pairs], values[rows][:, pairs], present[rows][:, pairs], *gains)
    assert (folded[rows] <= without_noise).all() and (folded[rows] < without_noise - 1e-3).any()


def _batch(test_split, delay=2, size=5):
    return AssociationTask(*test_split, delay=delay, seed=1).sample(size)


@pytest.mark.parametrize("model_class", [HMemAssociation, LSTMAssociation])
def test_forward_shapes(test_split, model_class):
    torch.manual_seed(0)
    batch = _batch(test_split)
    model = model_class(ImageEncoder())
    assert model(batch.frames, batch.symbols, batch.query).shape == (5, N_SYMBOLS)
    with pytest.raises(ValueError, match="symbols"):
        model(batch.frames, batch.symbols[:, 1:], batch.query)


def test_hmem_has_the_papers_sizes():
    model = HMemAssociation(ImageEncoder(EncoderConfig(features=128)))
    assert model.key.weight.shape == (200, 128) and model.query.weight.shape == (200, 128)
    assert model.value.weight.shape == (200, N_SYMBOLS) and model.out.weight.shape == (N_SYMBOLS, 200)
    assert all(layer.bias is None for layer in (model.key, model.value, model.query, model.out))
    assert LSTMAssociation(ImageEncoder()).lstm.hidden_size == 200


def test_hmem_answer_depends_on_the_pairing_not_on_the_symbols_alone(test_split):
    torch.manual_seed(0)
    model = HMemAssociation(ImageEncoder())
    batch = _batch(test_split, delay=0)
    swapped = batch.symbols[:, [1, 0, 2]]  # the same symbols, paired with other images
    with torch.no_grad():
        paired, repaired = (model(batch.frames, symbols, batch.query) for symbols in (batch.symbols, swapped))
    assert not torch.allclose(paired, repaired)


@pytest.mark.parametrize("model_class", [HMemAssociation, LSTMAssociation])
@pytest.mark.parametrize("frozen", [True, False])
def test_gradient_reaches_what_trains(test_split, model_class, frozen):
    torch.manual_seed(0)
    encoder = ImageEncoder().requires_grad_(not frozen)
    model = model_class(encoder)
    batch = _batch(test_split)
    loss = F.cross_entropy(model(batch.frames, batch.symbols, batch.query), batch.target) + model.l2_penalty()
    loss.backward()
    for name, param in model.named_parameters():
        if name.startswith("encoder.") and frozen:
            assert param.grad is None, name
        else:
            assert param.grad is not None and param.grad.abs().sum() > 0, name


def test_configs_reject_impossible_values():
    with pytest.raises(ConfigError, match="m must be a positive integer"):
        HMemAssociationConfig(m=0)
    with pytest.raises(ConfigError, match="gain_minus"):
        HMemAssociationConfig(gain_minus=-0.1)
    with pytest.raises(ConfigError, match="hidden"):
        LSTMAssociationConfig(hidden=0)
    with pytest.raises(ConfigError, match="batch_size"):
        AssociationTrainConfig(batch_size=0)


def test_hmem_learns_single_shot_associations_at_delay_zero(train_split, test_split, frozen_encoder):
    torch.manual_seed(0)
    model = HMemAssociation(frozen_encoder, HMemAssociationConfig(m=64))  # smaller than the paper's, for speed
    losses = train_association(model, AssociationTask(*train_split, seed=0), steps=150)
    assert sum(losses[-20:]) < sum(losses[:20])
    test_task = AssociationTask(*test_split)
    accuracy = evaluate_association(model, test_task, sequences=500)
    # Chance is 0.1; recalling only which three symbols were shown would give 1/3.
    assert accuracy > 0.6
    assert evaluate_association(model, test_task, sequences=500) == accuracy  # the same test sequences
