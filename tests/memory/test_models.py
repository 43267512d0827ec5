import math

import pytest
import torch
import torch.nn.functional as F

from synaptorch.errors import ConfigError
from synaptorch.memory import (
    MODELS,
    HMem,
    HMemConfig,
    HMemTrainConfig,
    LSTMBaseline,
    LSTMConfig,
    MemN2N,
    MemN2NConfig,
    MemN2NTrainConfig,
    position_weights,
)
from synaptorch.plasticity import hebbian_write_sequence

# A one-supporting-fact task: each sentence is "actor place time", the question "actor", the
# answer the place of that actor's last sentence. Ids: 0 padding, then actors, places, time words.
ACTORS, PLACES, SENTENCES = 4, 6, 6
VOCAB = 1 + ACTORS + PLACES + SENTENCES
WORDS = 3


def one_supporting_fact(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    actors = torch.randint(1, ACTORS + 1, (n, SENTENCES), generator=generator)
    places = torch.randint(ACTORS + 1, ACTORS + PLACES + 1, (n, SENTENCES), generator=generator)
    times = (1 + ACTORS + PLACES + torch.arange(SENTENCES)).expand(n, SENTENCES)
    stories = torch.stack([actors, places, times], -1)  # (n, SENTENCES, WORDS)
    who = actors[torch.arange(n), torch.randint(SENTENCES, (n,), generator=generator)]
    last = torch.where(actors == who[:, None], torch.arange(SENTENCES), -1).amax(1)
    questions = F.pad(who[:, None], (0, WORDS - 1))
    return stories, questions, places[torch.arange(n), last]


def build(name: str, **fields) -> torch.nn.Module:
    config_class, model_class, overrides = MODELS[name]
    if config_class is HMemConfig:
        fields.setdefault("n_words", WORDS)
    return model_class(config_class(vocab_size=VOCAB, **overrides, **fields))


def train(model: torch.nn.Module, steps: int, lr: float, batch: int) -> float:
    """Adam on fresh batches; returns the accuracy on 1000 unseen examples."""
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    for step in range(steps):
        stories, questions, answers = one_supporting_fact(batch, seed=step)
        loss = F.cross_entropy(model(stories, questions), answers)
        if isinstance(model, HMem):
            loss = loss + model.l2_penalty()
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 20.0)
        optimizer.step()
    model.eval()
    stories, questions, answers = one_supporting_fact(1000, seed=-1)
    with torch.no_grad():
        return (model(stories, questions).argmax(-1) == answers).float().mean().item()


ALL = sorted(MODELS)


@pytest.mark.parametrize("name", ALL)
def test_forward_shape(name):
    torch.manual_seed(0)
    stories, questions, _ = one_supporting_fact(5, seed=0)
    assert build(name)(stories, questions).shape == (5, VOCAB)


def test_single_shot_sizes_of_hmem():
    torch.manual_seed(0)
    model = build("hmem", m=200, hops=1)
    stories, questions, _ = one_supporting_fact(4, seed=0)
    assert model(stories, questions).shape == (4, VOCAB)
    assert model.key.weight.shape == (200, 80) and model.query.weight.shape == (200, 280)


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("train_mode", [False, True])
def test_padding_sentences_change_nothing(name, train_mode):
    torch.manual_seed(0)
    model = build(name, **({"random_noise": 0.0} if name == "memn2n" else {}))
    with torch.no_grad():
        # Move every weight off its initial value, as training would; padding ids stay zero.
        for param in model.parameters():
            param.add_(0.3 * torch.randn_like(param))
        for module in model.modules():
            if isinstance(module, torch.nn.Embedding):
                module.weight[0] = 0
    stories, questions, _ = one_supporting_fact(8, seed=1)
    stories[:4, :2] = 0  # shorter stories in the batch too
    empty = torch.zeros(8, 1, WORDS, dtype=stories.dtype)
    model.train(train_mode)
    with torch.no_grad():
        plain = model(stories, questions)
        older = model(torch.cat([empty, stories], 1), questions)
        newer = model(torch.cat([stories, empty, empty], 1), questions)
    torch.testing.assert_close(older, plain)
    torch.testing.assert_close(newer, plain)


@pytest.mark.parametrize(
    ("name", "fields"),
    [
        ("hmem", {"learn_gain_plus": True, "learn_gain_minus": True, "learn_w_max": True}),
        ("hmem-rbw", {"learn_gain_plus": True}),
        ("memn2n", {}),
        ("memn2n", {"linear_start": True}),
        ("lstm", {}),
    ],
)
def test_gradient_reaches_every_parameter(name, fields):
    torch.manual_seed(0)
    model = build(name, **fields)
    stories, questions, answers = one_supporting_fact(16, seed=2)
    F.cross_entropy(model(stories, questions), answers).backward()
    for param_name, param in model.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, param_name
        assert torch.isfinite(param.grad).all(), param_name


@pytest.mark.parametrize(
    ("name", "steps", "lr", "batch", "above"),
    [
        # chance is 1 / PLACES, about 0.17
        ("hmem", 200, 3e-3, 32, 0.9),
        ("hmem-rbw", 200, 3e-3, 32, 0.8),
        ("memn2n", 200, 1e-2, 32, 0.9),
        ("lstm", 1000, 1e-2, 64, 0.5),
    ],
)
def test_learns_one_supporting_fact(name, steps, lr, batch, above):
    torch.manual_seed(0)
    assert train(build(name), steps, lr, batch) > above


# H-Mem


def test_hmem_memory_is_the_hebbian_rule_over_real_sentences():
    torch.manual_seed(0)
    model = build("hmem", gain_plus=0.2, gain_minus=0.1, w_max=2.0).eval()
    stories, _, _ = one_supporting_fact(3, seed=3)
    stories[0, 1] = 0
    present = stories.ne(0).any(-1)
    keys, values = torch.rand(2, 3, SENTENCES, model.config.m)
    expected = torch.zeros(3, model.config.m, model.config.m)
    for b in range(3):
        real = present[b].nonzero().squeeze(-1)
        expected[b] = hebbian_write_sequence(keys[b : b + 1, real], values[b : b + 1, real], None, None, 0.2, 0.1, 2.0)
    torch.testing.assert_close(model.write(keys, values, present), expected)


def test_hmem_time_word_slot_keeps_weight_one():
    torch.manual_seed(0)
    model = build("hmem")
    train(model, steps=5, lr=3e-2, batch=16)
    words = torch.tensor([[0, 0, 14], [14, 0, 0]])  # a time word in the last slot, then in the first
    encoded = model.encode(words)
    torch.testing.assert_close(encoded[0], model.embed.weight[14])
    assert not torch.allclose(encoded[1], model.embed.weight[14])  # the learned slots moved away from 1


def test_hmem_l2_penalty_is_on_key_value_and_read_weights():
    model = build("hmem", l2=0.5)
    expected = 0.5 * sum(w.square().sum() for w in (model.key.weight, model.value.weight, model.query.weight))
    torch.testing.assert_close(model.l2_penalty(), expected)


def test_hmem_refuses_sentences_of_another_width():
    model = build("hmem")
    stories, questions, _ = one_supporting_fact(2, seed=0)
    with pytest.raises(ValueError, match="n_words"):
        model(F.pad(stories, (0, 1)), questions)


def test_hmem_training_schedules():
    plain = HMemTrainConfig.paper()
    assert (plain.lr, plain.grad_clip, plain.batch_size, plain.epochs) == (3e-3, 20.0, 128, 100)
    assert plain.learning_rate(19) == pytest.approx(3e-3)
    assert plain.learning_rate(20) == pytest.approx(3e-3 * 0.85)
    assert plain.learning_rate(45) == pytest.approx(3e-3 * 0.85**2)
    rbw = HMemTrainConfig.paper(read_before_write=True)
    assert rbw.epochs == 100 and HMemTrainConfig.paper(read_before_write=True, task=16).epochs == 250
    assert HMemTrainConfig.paper(task=16).epochs == 100
    assert rbw.learning_rate(150) == pytest.approx(3e-3)
    assert rbw.learning_rate(160) == pytest.approx(3e-3 * math.exp(-0.1))


# MemN2N


def test_memn2n_matches_a_loop_over_memories():
    """Two hops computed sentence by sentence: weight tying, ages from the newest, the paper's l_kj."""
    torch.manual_seed(0)
    config = MemN2NConfig(vocab_size=VOCAB, d=6, hops=2, random_noise=0.0)
    model = MemN2N(config).eval()
    stories, questions, _ = one_supporting_fact(2, seed=4)
    stories[1, 0] = 0
    stories[1, 3, 1:] = 0  # a one-word sentence

    def encode(words, embedding):
        real = [w for w in words.tolist() if w]
        J, d = len(real), config.d
        return sum(
            torch.tensor([(1 - j / J) - (k / d) * (1 - 2 * j / J) for k in range(1, d + 1)]) * embedding.weight[w]
            for j, w in enumerate(real, 1)
        )

    E, T = model.embeddings, model.temporal
    for b in range(2):
        sentences = [s for s in stories[b] if s.any()][::-1]  # newest first
        u = encode(questions[b], E[0])
        for k in range(2):
            m = torch.stack([encode(s, E[k]) + T[k][i] for i, s in enumerate(sentences)])
            c = torch.stack([encode(s, E[k + 1]) + T[k + 1][i] for i, s in enumerate(sentences)])
            u = u + (torch.softmax(m @ u, 0)[:, None] * c).sum(0)
        torch.testing.assert_close(model(stories[b : b + 1], questions[b : b + 1])[0], E[2].weight @ u)


def test_memn2n_position_weights_by_hand():
    # J = 2 words (the padding slot does not count), d = 2: l_kj = (1 - j/2) - (k/2)(1 - j)
    # j = 1: 0.5 - 0 = 0.5 for both k; j = 2: 0 + k/2 = 0.5, 1
    weights = position_weights(torch.tensor([[7, 9, 0]]), d=2)
    torch.testing.assert_close(weights[0, :2], torch.tensor([[0.5, 0.5], [0.5, 1.0]]))


def test_memn2n_keeps_only_the_newest_memories():
    torch.manual_seed(0)
    model = MemN2N(MemN2NConfig(vocab_size=VOCAB, memory_size=2)).eval()
    stories, questions, _ = one_supporting_fact(4, seed=5)
    changed_old, changed_new = stories.clone(), stories.clone()
    changed_old[:, -3, 1] = ACTORS + 1 + (stories[:, -3, 1] - ACTORS) % PLACES  # another place, third newest
    changed_new[:, -2, 1] = ACTORS + 1 + (stories[:, -2, 1] - ACTORS) % PLACES  # second newest
    with torch.no_grad():
        plain = model(stories, questions)
        torch.testing.assert_close(model(changed_old, questions), plain)
        assert not torch.allclose(model(changed_new, questions), plain)


def test_memn2n_linear_start_drops_the_softmax_until_ended():
    torch.manual_seed(0)
    model = MemN2N(MemN2NConfig(vocab_size=VOCAB, hops=1, linear_start=True, temporal_encoding=False)).eval()
    stories, questions, _ = one_supporting_fact(3, seed=6)
    E, weights = model.embeddings, position_weights(stories, 20)
    m = (E[0](stories) * weights).sum(-2)
    c = (E[1](stories) * weights).sum(-2)
    u = (E[0](questions) * position_weights(questions, 20)).sum(-2)
    scores = (m @ u[..., None]).squeeze(-1)
    with torch.no_grad():
        torch.testing.assert_close(model(stories, questions), (u + (scores[..., None] * c).sum(1)) @ E[1].weight.T)
        model.end_linear_start()
        expected = (u + (scores.softmax(-1)[..., None] * c).sum(1)) @ E[1].weight.T
        torch.testing.assert_close(model(stories, questions), expected)


def test_memn2n_random_noise_inserts_empty_memories_in_training_only():
    torch.manual_seed(0)
    model = MemN2N(MemN2NConfig(vocab_size=VOCAB, random_noise=0.1))
    stories = torch.randint(1, VOCAB, (64, 20, WORDS))
    stories[:, :5] = 0  # 15 real sentences: round(1.5) = 2 empty memories each
    present = stories.ne(0).any(-1)
    noisy, slots, order = model._with_empty_memories(stories, present)
    assert noisy.shape == (64, 22, WORDS) and slots.sum(-1).eq(17).all()
    assert not noisy[:, 20:].any()
    real_order = order[:, 5:20]
    assert (real_order.diff(dim=-1) > 0).all()  # the story's own order is kept
    places = order[:, 20:]
    assert (places >= 0).all() and (places < 15).all() and places.std() > 2  # spread among the sentences
    questions = torch.randint(1, VOCAB, (64, WORDS))
    with torch.no_grad():
        assert not torch.allclose(model(stories, questions), model(stories, questions))
        model.eval()
        torch.testing.assert_close(model(stories, questions), model(stories, questions))


def test_memn2n_defaults_and_schedule_are_the_papers():
    config = MemN2NConfig(vocab_size=VOCAB)
    assert (config.d, config.hops, config.memory_size, config.init_std) == (20, 3, 50, 0.1)
    schedule = MemN2NTrainConfig()
    assert (schedule.grad_clip, schedule.batch_size, schedule.epochs) == (40.0, 32, 100)
    rates = [schedule.learning_rate(epoch) for epoch in (0, 24, 25, 50, 99)]
    assert rates == pytest.approx([0.01, 0.01, 0.005, 0.0025, 0.00125])
    assert schedule.learning_rate(0, linear_start=True) == pytest.approx(0.005)
    assert MemN2N(config).embeddings[0].weight[1:].std().item() == pytest.approx(0.1, rel=0.2)


# LSTM and the configs


def test_lstm_reads_words_in_story_order():
    torch.manual_seed(0)
    model = LSTMBaseline(LSTMConfig(vocab_size=VOCAB)).eval()
    stories, questions, _ = one_supporting_fact(2, seed=7)
    # The same words, with padding slots moved inside the sentences, give the same answer...
    spread = torch.zeros(2, SENTENCES, 2 * WORDS, dtype=stories.dtype)
    spread[..., ::2] = stories
    with torch.no_grad():
        torch.testing.assert_close(model(spread, questions), model(stories, questions))
        # ...but the same sentences in another order do not.
        assert not torch.allclose(model(stories.flip(1), questions), model(stories, questions))


@pytest.mark.parametrize(
    ("config_class", "fields"),
    [
        (HMemConfig, {"n_words": 3, "m": 0}),
        (HMemConfig, {"n_words": 3, "w_max": 0.0}),
        (HMemConfig, {"n_words": 3, "gain_minus": -0.1}),
        (MemN2NConfig, {"random_noise": 1.0}),
        (MemN2NConfig, {"hops": 0}),
        (LSTMConfig, {"hidden": 0}),
    ],
)
def test_configs_refuse_impossible_values(config_class, fields):
    with pytest.raises(ConfigError):
        config_class(vocab_size=VOCAB, **fields)


def test_registry_names_the_variants():
    assert set(MODELS) == {"hmem", "hmem-rbw", "memn2n", "lstm", "bdh"}
    assert build("hmem-rbw").config.read_before_write and not build("hmem").config.read_before_write
    with pytest.raises(ConfigError):
        HMemTrainConfig(schedule="cosine")
