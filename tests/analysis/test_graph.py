import networkx as nx
import numpy as np
import pytest
import torch

from synaptorch import BDH, BDHConfig
from synaptorch.analysis.graph import (
    degrees,
    graph_stats,
    louvain_modularity,
    neuron_graphs,
    neuron_matrices,
    rewired,
    threshold_graph,
)
from synaptorch.errors import ConfigError


def two_cliques() -> nx.DiGraph:
    """Two complete graphs of 4 nodes, both directions of every pair, and one bridge 3 <-> 4."""
    graph = nx.DiGraph()
    for block in (range(4), range(4, 8)):
        graph.add_edges_from((i, j) for i in block for j in block if i != j)
    graph.add_edges_from([(3, 4), (4, 3)])
    return graph


def test_louvain_finds_the_two_cliques_and_their_modularity():
    graph = two_cliques()
    communities = nx.community.louvain_communities(graph, seed=0)
    assert sorted(map(sorted, communities)) == [[0, 1, 2, 3], [4, 5, 6, 7]]
    # 26 arcs; each clique holds 12 of them and 13 out- and 13 in-degrees:
    # Q = sum over the two of 12/26 - (13 * 13) / 26^2 = 2 * (12/26 - 1/4).
    modularity, n_communities = louvain_modularity(graph, seed=0)
    assert n_communities == 2
    assert modularity == pytest.approx(2 * (12 / 26 - 0.25))


def test_rewiring_keeps_every_degree_and_moves_edges():
    graph = nx.gnm_random_graph(60, 400, directed=True, seed=3)
    shuffled = rewired(graph, seed=1)
    assert shuffled.number_of_edges() == graph.number_of_edges()
    assert dict(shuffled.in_degree()) == dict(graph.in_degree())
    assert dict(shuffled.out_degree()) == dict(graph.out_degree())
    assert nx.number_of_selfloops(shuffled) == 0
    assert len(set(shuffled.edges) - set(graph.edges)) > 200


def test_modular_graph_beats_its_baseline():
    # Four dense blocks sparsely linked: rewiring with the same degrees destroys the blocks.
    graph = nx.DiGraph(nx.stochastic_block_model([20] * 4, np.full((4, 4), 0.02) + np.eye(4) * 0.5, seed=0))
    stats = graph_stats(graph, seed=0, baselines=3)
    assert stats.modularity > 0.5
    assert stats.modularity > stats.baseline_mean + 5 * stats.baseline_std
    assert stats.baseline_mean < 0.4


def test_degrees_of_a_known_graph():
    star = nx.DiGraph([(0, leaf) for leaf in range(1, 21)] + [(1, 2)])
    in_degree, out_degree = degrees(star)
    assert out_degree.tolist() == [20, 1] + [0] * 19
    assert in_degree.tolist() == [0, 1, 2] + [1] * 18


def test_power_law_degrees_of_a_configuration_graph():
    rng = np.random.default_rng(0)
    support = np.arange(1, 300)
    weights = support**-2.5
    out_sequence = rng.choice(support, size=3000, p=weights / weights.sum())
    in_sequence = rng.permutation(out_sequence)
    multigraph = nx.directed_configuration_model(in_sequence.tolist(), out_sequence.tolist(), seed=0)
    graph = nx.DiGraph(multigraph)  # merges the few parallel edges, keeps self-loops
    stats = graph_stats(graph, seed=0, baselines=1)
    assert stats.out_power_law.alpha == pytest.approx(2.5, abs=0.2)
    assert stats.in_power_law.alpha == pytest.approx(2.5, abs=0.2)
    record = stats.to_dict()["out_power_law"]
    assert set(record) == {"alpha", "x_min", "ks", "n_tail", "lr_lognormal", "p_lognormal"}
    assert record["ks"] < 0.05 and 0 <= record["p_lognormal"] <= 1


def test_threshold_keeps_the_largest_positive_off_diagonal_entries():
    weights = torch.tensor([[9.0, 5.0, -1.0], [4.0, 9.0, 0.5], [-2.0, 3.0, 9.0]])
    assert set(threshold_graph(weights, keep=0.5).edges) == {(0, 1), (1, 0), (2, 1)}
    # Asking for all six pairs keeps only the four positive ones.
    assert set(threshold_graph(weights, keep=1.0).edges) == {(0, 1), (1, 0), (2, 1), (1, 2)}
    assert threshold_graph(weights, keep=1.0).number_of_nodes() == 3
    with pytest.raises(ConfigError):
        threshold_graph(weights, keep=0)


def test_neuron_matrices_compose_the_decoder_with_the_encoders():
    config = BDHConfig(n_layer=1, n_embd=4, n_head=2, n_neuron=4, dropout=0.0)
    model = BDH(config)
    with torch.no_grad():
        model.decoder.zero_()
        model.encoder_x.zero_()
        model.encoder_y.zero_()
        model.decoder[1 * 4 + 2, 3] = 2.0  # head 1, neuron 2 writes residual dimension 3
        model.encoder_x[1, 3, 0] = 1.5  # head 1, neuron 0 reads dimension 3
        model.encoder_y[1, 3, 1] = -1.0
    matrices = neuron_matrices(model)
    assert matrices["x"].shape == (2, 4, 4)
    expected_x = torch.zeros(2, 4, 4)
    expected_x[1, 2, 0] = 3.0
    expected_y = torch.zeros(2, 4, 4)
    expected_y[1, 2, 1] = -2.0
    assert torch.equal(matrices["x"], expected_x)
    assert torch.equal(matrices["y"], expected_y)
    graphs = neuron_graphs(model, keep=0.1)
    assert set(graphs) == {("x", 0), ("x", 1), ("y", 0), ("y", 1)}
    assert set(graphs["x", 1].edges) == {(2, 0)}
    assert graphs["y", 1].number_of_edges() == 0  # the only entry is negative


def _in_own_subspace(seed: int, dims: slice) -> BDH:
    """A BDH whose neurons read (Dx) and write (E) only the residual dimensions `dims`, with positive weights."""
    torch.manual_seed(seed)
    model = BDH(BDHConfig(n_layer=1, n_embd=16, n_head=2, n_neuron=24, dropout=0.0))
    with torch.no_grad():
        model.encoder_x.zero_()
        model.decoder.zero_()
        width = dims.stop - dims.start
        model.encoder_x[:, dims, :] = torch.rand(2, width, 24)
        model.decoder[:, dims] = torch.rand(48, width)
    return model


def test_communities_follow_the_origin_of_neurons_that_share_no_residual_dimension():
    from synaptorch.analysis.graph import communities_by_origin
    from synaptorch.models.merge import merge, neuron_origins

    a, b = _in_own_subspace(0, slice(0, 8)), _in_own_subspace(1, slice(8, 16))
    merged = merge([a, b])
    origins = neuron_origins([a.config, b.config])
    result = communities_by_origin(merged, origins, keep=0.2)
    # No entry of G_x links the two sources: every community is of one origin, unlike chance.
    assert result["purity"] == 1.0
    assert result["chance_purity"] < 0.9
    assert result["origin_modularity"] > 0.4
    assert len(result["heads"]) == 2
    assert result["twins_together"] == 0.0  # neuron i of a and neuron i of b never share a community
    shuffled = communities_by_origin(merged, list(np.random.default_rng(0).permutation(origins)), keep=0.2)
    assert shuffled["purity"] < 0.9 and shuffled["origin_modularity"] < 0.1
    with pytest.raises(ConfigError, match="origins for heads of 48"):
        communities_by_origin(merged, origins[:10])


def test_the_twins_of_a_model_merged_with_itself_share_their_communities():
    from synaptorch.analysis.graph import communities_by_origin
    from synaptorch.models.merge import merge

    a = _in_own_subspace(0, slice(0, 16))
    result = communities_by_origin(merge([a, a]), [0] * 24 + [1] * 24, keep=0.2)
    assert result["twins_together"] > result["chance_twins"] + 0.3
    assert "twins_together" not in communities_by_origin(merge([a, _narrow(a)]), [0] * 24 + [1] * 12, keep=0.2)


def _narrow(model: BDH) -> BDH:
    narrow = BDH(BDHConfig(n_layer=1, n_embd=16, n_head=2, n_neuron=12, dropout=0.0))
    with torch.no_grad():
        narrow.encoder_x.copy_(model.encoder_x[..., :12])
        narrow.decoder.view(2, 12, 16).copy_(model.decoder.view(2, 24, 16)[:, :12])
    return narrow
