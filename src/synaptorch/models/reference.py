"""Import of checkpoints written by the public reference code of BDH.

The reference `state_dict` holds `encoder` (nh, d, N), `encoder_v` (nh, d, N), `decoder` (nh*N, d),
`embed.weight` (V, d) and `lm_head` (d, V); torch.compile prefixes every key with `_orig_mod.`,
and some versions carry an unused `lm_gate` and the RoPE frequency buffer `attn.freqs`.
The number of layers is not recorded, so the caller must give it.
"""

from __future__ import annotations

from pathlib import Path

from torch import Tensor

from synaptorch.errors import CheckpointError
from synaptorch.io import load_torch_state
from synaptorch.models.bdh import BDH, BDHConfig

KEY_MAP = {
    "embed.weight": "embed.weight",
    "encoder": "encoder_x",
    "encoder_v": "encoder_y",
    "decoder": "decoder",
    "lm_head": "readout",
}
IGNORED = {"lm_gate", "attn.freqs"}
COMPILE_PREFIX = "_orig_mod."


def _unwrap(obj: object) -> dict[str, Tensor]:
    if isinstance(obj, dict) and isinstance(obj.get("model"), dict):
        obj = obj["model"]
    if not isinstance(obj, dict) or not all(isinstance(v, Tensor) for v in obj.values()):
        raise CheckpointError("not a BDH reference state_dict (expected a mapping of names to tensors)")
    return {k.removeprefix(COMPILE_PREFIX): v for k, v in obj.items()}


def bdh_from_reference_state_dict(state_dict: dict, n_layer: int = 6, dropout: float = 0.1) -> BDH:
    """Build a BDH whose logits equal those of the reference model with these weights."""
    sd = _unwrap(state_dict)
    missing = sorted(set(KEY_MAP) - set(sd))
    unknown = sorted(set(sd) - set(KEY_MAP) - IGNORED)
    if missing or unknown:
        raise CheckpointError(
            f"not a BDH reference checkpoint: missing {missing or 'nothing'}, unexpected {unknown or 'nothing'}"
        )
    n_head, n_embd, n_neuron = sd["encoder"].shape
    vocab_size = sd["embed.weight"].shape[0]
    expected = {
        "embed.weight": (vocab_size, n_embd),
        "encoder": (n_head, n_embd, n_neuron),
        "encoder_v": (n_head, n_embd, n_neuron),
        "decoder": (n_head * n_neuron, n_embd),
        "lm_head": (n_embd, vocab_size),
    }
    for key, shape in expected.items():
        if tuple(sd[key].shape) != shape:
            raise CheckpointError(f"reference tensor {key} has shape {tuple(sd[key].shape)}, expected {shape}")
    config = BDHConfig(
        n_layer=n_layer, n_embd=n_embd, n_head=n_head, n_neuron=n_neuron, vocab_size=vocab_size, dropout=dropout
    )
    model = BDH(config)
    model.load_state_dict({ours: sd[theirs].float() for theirs, ours in KEY_MAP.items()})
    return model


def load_reference_checkpoint(path: str | Path, n_layer: int = 6) -> BDH:
    """A BDH with the weights of a reference-code state_dict file (read with weights_only=True)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"reference checkpoint not found: {path}")
    return bdh_from_reference_state_dict(load_torch_state(path), n_layer=n_layer)


def convert_reference_checkpoint(src: str | Path, dst: str | Path, n_layer: int = 6) -> BDH:
    """Write the reference checkpoint `src` as a synaptorch checkpoint folder `dst`, which must be new."""
    if Path(dst).exists():
        raise CheckpointError(f"{dst} already exists; choose a new folder")
    model = load_reference_checkpoint(src, n_layer=n_layer)
    model.save_pretrained(dst, converted_from=str(src))
    return model
