import math

import pytest
import torch

from synaptorch.errors import ConfigError
from synaptorch.train.tks import tks_loss, tks_weight


def _log_softmax(row: list[float]) -> list[float]:
    top = math.log(sum(math.exp(v) for v in row))
    return [v - top for v in row]


def test_tks_loss_matches_a_hand_computed_case():
    # Two time steps, three positions, two ids. Position 0: both steps right; position 1: only
    # step 1 right; position 2: neither, so it has no teacher.
    steps = [[[2.0, 0.0], [0.0, 1.0], [0.0, 5.0]], [[1.0, 0.0], [1.0, 0.0], [0.0, 5.0]]]
    targets = [0, 1, 0]
    tau, weight = 3.0, 0.4
    mean = [[(a + b) / 2 for a, b in zip(*rows, strict=True)] for rows in zip(*steps, strict=True)]
    l1 = -sum(_log_softmax(row)[y] for row, y in zip(mean, targets, strict=True)) / 3
    teachers = {0: [1.5, 0.0], 1: [0.0, 1.0]}  # means of the right steps' outputs
    l2 = 0.0
    for t in range(2):
        for n, teacher in teachers.items():
            soft = [math.exp(v) for v in _log_softmax([v / tau for v in teacher])]
            student = _log_softmax([v / tau for v in steps[t][n]])
            l2 -= sum(p * q for p, q in zip(soft, student, strict=True))
    l2 = tau**2 * l2 / (2 * 3)
    expected = weight * l1 + (1 - weight) * l2
    got = tks_loss(torch.tensor(steps), torch.tensor(targets), weight, tau)
    assert got.item() == pytest.approx(expected, rel=1e-6)


def test_the_teacher_carries_no_gradient_and_the_weight_falls_linearly():
    outputs = torch.randn(3, 5, 7, requires_grad=True)
    targets = outputs.detach()[1].argmax(-1)  # step 2 is right everywhere
    tks_loss(outputs, targets, weight=0.0).backward()
    # The teacher is held fixed: the gradient of step t is tau (softmax(O_t / tau) - softmax(teacher / tau)).
    right = (outputs.detach().argmax(-1) == targets).unsqueeze(-1)
    soft = torch.softmax((outputs.detach() * right).sum(0) / right.sum(0) / 3, -1)
    expected = 3 * (torch.softmax(outputs.detach() / 3, -1) - soft) / (3 * 5)
    torch.testing.assert_close(outputs.grad, expected)
    assert [tks_weight(p) for p in (0.0, 0.5, 1.0, 2.0)] == pytest.approx([1.0, 0.65, 0.3, 0.3])
    with pytest.raises(ConfigError, match="weight"):
        tks_loss(outputs, targets, weight=1.5)
