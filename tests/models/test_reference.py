"""Import of reference-code checkpoints, checked against an independent transcription of the
reference forward pass (float32 phases, stacked rotation, broadcast heads), not our own code."""

import math

import pytest
import torch
import torch.nn.functional as F

from synaptorch.errors import CheckpointError
from synaptorch.models.reference import bdh_from_reference_state_dict, load_reference_checkpoint


def reference_state_dict(n_head=2, d=16, n=32, vocab=256, seed=0, compiled=False, extras=True):
    g = torch.Generator().manual_seed(seed)
    sd = {
        "decoder": torch.randn(n_head * n, d, generator=g) * 0.02,
        "encoder": torch.randn(n_head, d, n, generator=g) * 0.02,
        "encoder_v": torch.randn(n_head, d, n, generator=g) * 0.02,
        "embed.weight": torch.randn(vocab, d, generator=g) * 0.02,
        "lm_head": torch.randn(d, vocab, generator=g) * 0.02,
    }
    if extras:
        sd["lm_gate"] = torch.randn(d, 1, generator=g)
        sd["attn.freqs"] = torch.zeros(1, 1, 1, n)
    if compiled:
        sd = {f"_orig_mod.{k}": v for k, v in sd.items()}
    return sd


def reference_logits(sd, idx, n_layer):
    """The reference BDH forward, written the way the reference code computes it."""
    encoder, encoder_v, decoder = sd["encoder"], sd["encoder_v"], sd["decoder"]
    nh, d, n = encoder.shape
    B, T = idx.shape
    quantized = (torch.arange(0, n, 1, dtype=torch.float32) / 2).floor() * 2
    theta = 2.0**16
    freqs = (1.0 / (theta ** (quantized / n)) / (2 * math.pi)).view(1, 1, 1, n)
    phases = torch.arange(0, T, dtype=torch.float32).view(1, 1, -1, 1) * freqs
    phases = (phases % 1) * (2 * math.pi)

    def rotate(v):
        v_rot = torch.stack((-v[..., 1::2], v[..., ::2]), dim=-1).view(*v.size())
        return v * torch.cos(phases) + v_rot * torch.sin(phases)

    def ln(v):
        return F.layer_norm(v, (v.shape[-1],))

    x = ln(F.embedding(idx, sd["embed.weight"]).unsqueeze(1))
    for _ in range(n_layer):
        x_sparse = F.relu(x @ encoder)
        qr = rotate(x_sparse)
        y_kv = ln((qr @ qr.mT).tril(diagonal=-1) @ x)
        xy = x_sparse * F.relu(y_kv @ encoder_v)
        y = ln(xy.transpose(1, 2).reshape(B, 1, T, n * nh) @ decoder)
        x = ln(x + y)
    return x.view(B, T, d) @ sd["lm_head"]


@pytest.mark.parametrize("compiled", [False, True])
@pytest.mark.parametrize("n_layer", [1, 3])
def test_converted_model_reproduces_reference_logits(compiled, n_layer):
    sd = reference_state_dict(compiled=compiled)
    model = bdh_from_reference_state_dict(sd, n_layer=n_layer).eval()
    idx = torch.randint(0, 256, (2, 50))
    expected = reference_logits({k.removeprefix("_orig_mod."): v for k, v in sd.items()}, idx, n_layer)
    with torch.no_grad():
        torch.testing.assert_close(model(idx), expected, rtol=0, atol=1e-4)
        recurrent, _ = model.forward_recurrent(idx)
    torch.testing.assert_close(recurrent, expected, rtol=0, atol=1e-4)


def test_shapes_give_the_config():
    model = bdh_from_reference_state_dict(reference_state_dict(n_head=3, d=8, n=12, vocab=50), n_layer=4)
    c = model.config
    assert (c.n_layer, c.n_head, c.n_embd, c.n_neuron, c.vocab_size) == (4, 3, 8, 12, 50)


def test_file_round_trip(tmp_path):
    sd = reference_state_dict(extras=False)
    torch.save(sd, tmp_path / "ref.pt")
    model = load_reference_checkpoint(tmp_path / "ref.pt", n_layer=2)
    assert torch.equal(model.encoder_y, sd["encoder_v"])
    assert torch.equal(model.readout, sd["lm_head"])


def test_wrong_keys_and_shapes_are_refused(tmp_path):
    sd = reference_state_dict()
    del sd["encoder_v"]
    with pytest.raises(CheckpointError, match="encoder_v"):
        bdh_from_reference_state_dict(sd)
    sd = reference_state_dict()
    sd["decoder"] = sd["decoder"][:-1]
    with pytest.raises(CheckpointError, match="decoder"):
        bdh_from_reference_state_dict(sd)
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    with pytest.raises(CheckpointError):
        load_reference_checkpoint(tmp_path / "junk.pt")
