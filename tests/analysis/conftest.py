import pytest
import torch

from synaptorch import BDH, BDHConfig


@pytest.fixture(scope="module")
def small_model():
    """A small BDH with random weights."""
    torch.manual_seed(0)
    return BDH(BDHConfig(n_layer=2, n_embd=16, n_head=2, n_neuron=16, dropout=0.0)).eval()


@pytest.fixture
def one_hot_model():
    """BDH whose neurons fire on known byte classes; nothing depends on context.

    Byte b embeds as the one-hot e_(b % 4) of d = 8, so after the layer norm x has 2.65 at
    dimension b % 4 and -0.38 elsewhere. Head 0: neuron n reads dimension n, so it fires on the
    bytes with b % 4 == n. Head 1: neuron 0 reads dimension 4 (never positive: never fires),
    neuron 1 reads -x_7 (always 0.38: always fires), neuron 2 reads x_0 + x_1 (fires on classes
    0 and 1), neuron 3 reads -x_0 (fires on every class but 0). Dy = 0 silences y_sparse and
    E = 0 leaves the residual stream as it is, so every layer fires alike.
    """
    model = BDH(BDHConfig(n_layer=2, n_embd=8, n_head=2, n_neuron=4, vocab_size=256, dropout=0.0))
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        model.embed.weight[torch.arange(256), torch.arange(256) % 4] = 1.0
        for n in range(4):
            model.encoder_x[0, n, n] = 1.0
        model.encoder_x[1, 4, 0] = 1.0
        model.encoder_x[1, 7, 1] = -1.0
        model.encoder_x[1, 0, 2] = model.encoder_x[1, 1, 2] = 1.0
        model.encoder_x[1, 0, 3] = -1.0
    return model.eval()


@pytest.fixture
def planted_model():
    """One layer, two heads, where the byte 'q' alone drives neuron 2 of head 1 and residual dimension 3.

    Every byte but 'q' embeds with -1 at dimension 3 and values in [0, 1) elsewhere, so dimension
    3 is its smallest and negative after the layer norm; 'q' embeds as 3 e_3, positive there.
    Neuron 2 of head 1 reads exactly dimension 3: it fires on 'q' only, and the synapse
    (layer 0, head 1, neuron 2, dimension 3) grows by about 2.65 * 2.65 at each 'q' and never
    elsewhere. The other weights are small and random.
    """
    torch.manual_seed(0)
    model = BDH(BDHConfig(n_layer=1, n_embd=8, n_head=2, n_neuron=4, vocab_size=256, dropout=0.0))
    with torch.no_grad():
        model.embed.weight.uniform_(0, 1)
        model.embed.weight[:, 3] = -1.0
        model.embed.weight[ord("q")] = 0.0
        model.embed.weight[ord("q"), 3] = 3.0
        model.encoder_x.normal_(std=0.1)
        model.encoder_x[1, :, 2] = 0.0
        model.encoder_x[1, 3, 2] = 1.0
        model.encoder_y.normal_(std=0.1)
        model.decoder.normal_(std=0.1)
    return model.eval()
