"""The neuron interaction graph that BDH's weights define, and its statistics.

Per head h, with E_h the rows of the decoder E that belong to the head's N neurons (N, d):

    G_x[h] = E_h Dx_h   (N, N): entry (i, j) is how much neuron i's output, written into the
                        residual stream through E, excites neuron j of the same head through Dx
                        at the next layer.
    G_y[h] = E_h Dy_h   (N, N): the same into neuron j's y side, which reads the residual stream
                        through the attention and Dy.

These are the paper's G_x = D_x E and G_y = D_y E with its naming (E encodes neurons into the
residual stream, D decodes it into neurons); the layer norms between are left out. A matrix
becomes a directed graph i -> j by keeping the fraction `keep` of its off-diagonal entries with
the largest values, and only positive ones.

Modularity is the directed modularity (Leicht and Newman) of the partition that networkx's
Louvain method finds on the directed graph, against the same on degree-preserving random graphs:
the graph rewired by edge swaps that keep every node's in- and out-degree.

The in- and out-degrees are fitted by a discrete power law (`stats.fit_power_law`), reported
with its Kolmogorov-Smirnov distance and its log-likelihood ratio against a lognormal: a heavy
tail alone does not make a power law, and a lognormal often fits degree data as well or better.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import networkx as nx
import numpy as np
import torch
from torch import Tensor, nn

from synaptorch.analysis.recording import check_bdh
from synaptorch.analysis.stats import PowerLaw, fit_power_law, round_for_report
from synaptorch.errors import ConfigError


@torch.no_grad()
def neuron_matrices(model: nn.Module) -> dict[str, Tensor]:
    """{"x": G_x, "y": G_y}, each (n_head, N, N), from the weights of a BDH model."""
    c = check_bdh(model).config
    decoder = model.decoder.detach().float().cpu().view(c.n_head, c.n_neuron, c.n_embd)  # E_h
    return {
        "x": decoder @ model.encoder_x.detach().float().cpu(),
        "y": decoder @ model.encoder_y.detach().float().cpu(),
    }


def threshold_graph(weights: Tensor, keep: float) -> nx.DiGraph:
    """Directed graph on range(N) with edges i -> j for the largest `keep` share of off-diagonal
    entries of weights (N, N), the positive ones among them."""
    if not 0 < keep <= 1:
        raise ConfigError(f"the share of edges to keep must be in (0, 1], got {keep}")
    n = weights.shape[0]
    off_diagonal = weights.clone().float()
    off_diagonal.fill_diagonal_(-math.inf)
    n_keep = max(1, round(keep * n * (n - 1)))
    values, flat = off_diagonal.flatten().topk(n_keep)
    flat = flat[values > 0]
    graph = nx.DiGraph()
    graph.add_nodes_from(range(n))
    graph.add_edges_from(zip((flat // n).tolist(), (flat % n).tolist(), strict=True))
    return graph


def louvain_modularity(graph: nx.DiGraph, seed: int) -> tuple[float, int]:
    """Directed modularity of a Louvain partition of graph, and the number of its communities."""
    if graph.number_of_edges() == 0:
        return 0.0, graph.number_of_nodes()
    communities = nx.community.louvain_communities(graph, seed=seed)
    return float(nx.community.modularity(graph, communities)), len(communities)


def rewired(graph: nx.DiGraph, seed: int, swaps_per_edge: int = 5) -> nx.DiGraph:
    """A copy of graph with shuffled edges and the same in- and out-degree at every node.

    Two edges a -> b and c -> d trade targets, a -> d and c -> b, unless that makes a self-loop
    or an edge that exists (Maslov and Sneppen). networkx's directed_edge_swap is not used: it
    needs a path a -> b -> c with no edge c -> b, so it cannot move the reciprocal edges that
    thresholded neuron graphs and undirected test graphs are full of.
    """
    edges = list(graph.edges)
    existing = set(edges)
    n_edges = len(edges)
    copy = nx.DiGraph()
    copy.add_nodes_from(graph.nodes)
    if n_edges >= 2:
        picks = np.random.default_rng(seed).integers(n_edges, size=(swaps_per_edge * n_edges, 2)).tolist()
        for i, j in picks:
            (a, b), (c, d) = edges[i], edges[j]
            if a == d or c == b or (a, d) in existing or (c, b) in existing:
                continue
            existing -= {(a, b), (c, d)}
            existing |= {(a, d), (c, b)}
            edges[i], edges[j] = (a, d), (c, b)
    copy.add_edges_from(edges)
    return copy


@dataclass
class GraphStats:
    nodes: int
    edges: int
    in_power_law: PowerLaw | None
    out_power_law: PowerLaw | None
    modularity: float
    communities: int
    baseline_mean: float
    baseline_std: float

    def to_dict(self) -> dict:
        record = asdict(self)
        for side in ("in_power_law", "out_power_law"):
            if record[side] is not None:
                record[side] = {k: round_for_report(k, v, 4) for k, v in record[side].items()}
        for key in ("modularity", "baseline_mean", "baseline_std"):
            record[key] = round(record[key], 4)
        return record


def degrees(graph: nx.DiGraph) -> tuple[np.ndarray, np.ndarray]:
    """In- and out-degree of every node, in node order."""
    nodes = sorted(graph.nodes)
    return (
        np.array([graph.in_degree(v) for v in nodes], dtype=np.int64),
        np.array([graph.out_degree(v) for v in nodes], dtype=np.int64),
    )


def graph_stats(graph: nx.DiGraph, seed: int = 0, baselines: int = 5) -> GraphStats:
    if baselines < 1:
        raise ConfigError(f"the modularity baseline needs at least one rewired graph, got {baselines}")
    if seed < 0:
        raise ConfigError(f"the seed must be >= 0, got {seed}")
    in_degree, out_degree = degrees(graph)
    modularity, communities = louvain_modularity(graph, seed)
    baseline = [louvain_modularity(rewired(graph, seed + 1 + i), seed)[0] for i in range(baselines)]
    return GraphStats(
        graph.number_of_nodes(),
        graph.number_of_edges(),
        fit_power_law(in_degree),
        fit_power_law(out_degree),
        modularity,
        communities,
        float(np.mean(baseline)),
        float(np.std(baseline)),
    )


def neuron_graphs(model: nn.Module, keep: float = 0.05) -> dict[tuple[str, int], nx.DiGraph]:
    """{(matrix, head): graph} for matrix "x" (E Dx) and "y" (E Dy), every head."""
    return {
        (name, head): threshold_graph(weights[head], keep)
        for name, weights in neuron_matrices(model).items()
        for head in range(weights.shape[0])
    }


def communities_by_origin(model: nn.Module, origins: list[int], keep: float = 0.05, seed: int = 0) -> dict:
    """How the Louvain communities of each head's G_x graph follow the neurons' origin.

    origins[i] names the source model of neuron i of every head (`models.merge.neuron_origins`).
    Per head: the modularity of the Louvain partition and of the partition by origin; purity,
    the share of neurons whose community's majority shares their origin; and the purity of the
    same communities under shuffled origins (chance). Where every source has the same number of
    neurons, as sources fine-tuned from one base do, `twins_together` is the share of neuron
    indices whose copies in every source share one community, against the same under a random
    relabelling of the neurons (`chance_twins`): sources that kept their base's neurons keep
    the twins together. Means over heads, then per head.
    """
    c = check_bdh(model).config
    if len(origins) != c.n_neuron:
        raise ConfigError(f"{len(origins)} origins for heads of {c.n_neuron} neurons")
    labels = np.asarray(origins)
    rng = np.random.default_rng(seed)
    heads = []
    for head, weights in enumerate(neuron_matrices(model)["x"]):
        graph = threshold_graph(weights, keep)
        communities = nx.community.louvain_communities(graph, seed=seed) if graph.number_of_edges() else []
        by_origin = [set(np.flatnonzero(labels == o).tolist()) for o in np.unique(labels)]
        chance = np.mean([_purity(communities, rng.permutation(labels)) for _ in range(20)]) if communities else 0.0
        heads.append(
            {
                "head": head,
                "communities": len(communities),
                "modularity": round(float(nx.community.modularity(graph, communities)), 4) if communities else 0.0,
                "origin_modularity": round(float(nx.community.modularity(graph, by_origin)), 4)
                if graph.number_of_edges()
                else 0.0,
                "purity": round(_purity(communities, labels), 4),
                "chance_purity": round(float(chance), 4),
                **_twins(communities, labels, rng),
            }
        )
    summary = {key: round(float(np.mean([h[key] for h in heads])), 4) for key in heads[0] if key != "head"}
    return {**summary, "keep": keep, "heads": heads}


def _twins(communities: list[set[int]], labels: np.ndarray, rng: np.random.Generator) -> dict[str, float]:
    counts = np.bincount(labels)
    if len(counts) < 2 or len(set(counts.tolist())) > 1 or not communities:
        return {}
    community = np.empty(len(labels), dtype=np.int64)
    for index, members in enumerate(communities):
        community[sorted(members)] = index
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])

    def together(of: np.ndarray) -> float:
        copies = np.stack([of[start : start + counts[0]] for start in starts])  # (sources, n)
        return float((copies == copies[0]).all(axis=0).mean())

    chance = np.mean([together(rng.permutation(community)) for _ in range(20)])
    return {"twins_together": round(together(community), 4), "chance_twins": round(float(chance), 4)}


def _purity(communities: list[set[int]], labels: np.ndarray) -> float:
    """The share of nodes whose community's most common label is their own."""
    if not communities:
        return 0.0
    majority = sum(np.bincount(labels[sorted(members)]).max() for members in communities)
    return float(majority) / len(labels)
