"""The report's figures, drawn with matplotlib's object API (no pyplot state, Agg canvas)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from synaptorch.analysis.graph import GraphStats
from synaptorch.analysis.neurons import NeuronSelectivity
from synaptorch.analysis.sparsity import Sparsity
from synaptorch.analysis.synapses import Trace
from synaptorch.io import atomic_write_bytes


def _figure(width: float, height: float, columns: int = 1):
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), layout="constrained")
    return figure, figure.subplots(1, columns, squeeze=False)[0]


def _save(figure, path: Path) -> Path:
    image = io.BytesIO()
    figure.savefig(image, format="png", dpi=90)
    atomic_write_bytes(path, image.getvalue())
    return path


def plot_sparsity(sparsity: Sparsity, path: Path) -> Path:
    figure, (per_layer, per_neuron) = _figure(10, 3.6, 2)
    layers = np.arange(sparsity.x_rate.shape[0])
    per_layer.bar(layers - 0.2, sparsity.x_rate.mean((1, 2)).numpy(), 0.4, label="x_sparse")
    per_layer.bar(layers + 0.2, sparsity.y_rate.mean((1, 2)).numpy(), 0.4, label="y_sparse")
    for head in range(sparsity.x_rate.shape[1]):
        per_layer.plot(layers - 0.2, sparsity.x_rate[:, head].mean(-1).numpy(), "k.", markersize=4)
        per_layer.plot(layers + 0.2, sparsity.y_rate[:, head].mean(-1).numpy(), "k.", markersize=4)
    per_layer.set(xlabel="layer", ylabel="share of non-zero activations", xticks=layers)
    per_layer.set_title("firing per layer (dots: heads)", fontsize=10)
    per_layer.legend(fontsize=8)
    bins = np.linspace(0, 1, 41)
    per_neuron.hist(sparsity.x_rate.flatten().numpy(), bins, alpha=0.6, label="x_sparse")
    per_neuron.hist(sparsity.y_rate.flatten().numpy(), bins, alpha=0.6, label="y_sparse")
    per_neuron.set(xlabel="firing rate of a neuron over the text", ylabel="neurons", yscale="log")
    per_neuron.set_title("distribution over neurons (all layers and heads)", fontsize=10)
    per_neuron.legend(fontsize=8)
    return _save(figure, path)


def plot_monosemanticity(selectivity: NeuronSelectivity, path: Path) -> Path:
    figure, (ax,) = _figure(6, 3.4)
    n_layer = selectivity.shape[0]
    scores = selectivity.monosemanticity.view(n_layer, -1)
    active = selectivity.mass.view(n_layer, -1) > 0
    bins = np.linspace(0, 1, 26)
    for layer in range(n_layer):
        ax.hist(scores[layer][active[layer]].numpy(), bins, histtype="step", label=f"layer {layer}")
    ax.set(xlabel="monosemanticity (share of activation mass on the top token)", ylabel="active neurons")
    ax.legend(fontsize=8)
    return _save(figure, path)


def _ccdf(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    values = np.sort(values[values > 0])
    unique = np.unique(values)
    return unique, 1 - np.searchsorted(values, unique, side="left") / len(values)


def plot_degrees(degree_sequences: dict[tuple[str, int], tuple[np.ndarray, np.ndarray]], path: Path) -> Path:
    """CCDF of in- and out-degrees, one panel per matrix, one colour per head."""
    matrices = sorted({name for name, _ in degree_sequences})
    figure, axes = _figure(5 * len(matrices), 3.6, len(matrices))
    for ax, name in zip(axes, matrices, strict=True):
        for (matrix, head), (in_degree, out_degree) in sorted(degree_sequences.items()):
            if matrix != name:
                continue
            colour = f"C{head % 10}"
            ax.loglog(*_ccdf(in_degree), "-", color=colour, label=f"head {head} in")
            ax.loglog(*_ccdf(out_degree), "--", color=colour, label=f"head {head} out")
        ax.set(xlabel="degree k", ylabel="P(degree >= k)")
        ax.set_title(f"G_{name} = E D{name}: degree distributions", fontsize=10)
        ax.legend(fontsize=7, ncol=2)
    return _save(figure, path)


def plot_modularity(stats: dict[tuple[str, int], GraphStats], path: Path) -> Path:
    figure, (ax,) = _figure(max(5, 0.7 * len(stats)), 3.4)
    keys = sorted(stats)
    position = np.arange(len(keys))
    ax.bar(position - 0.2, [stats[k].modularity for k in keys], 0.4, label="neuron graph")
    ax.bar(
        position + 0.2,
        [stats[k].baseline_mean for k in keys],
        0.4,
        yerr=[stats[k].baseline_std for k in keys],
        capsize=3,
        label="degree-preserving rewiring",
    )
    ax.set_xticks(position, [f"G_{name} h{head}" for name, head in keys], fontsize=8)
    ax.set(ylabel="modularity (Louvain, directed)")
    ax.legend(fontsize=8)
    return _save(figure, path)


def plot_synapses(trace: Trace, path: Path, shown: int = 5) -> Path:
    """Held-out sentences' growth of the top synapses, with and without the concept."""
    shown = min(shown, len(trace.synapses))
    figure, (ax,) = _figure(max(5, 1.4 * shown), 3.6)
    rng = np.random.default_rng(0)
    for n in range(shown):
        groups = ((-0.18, trace.values_with[:, n], "C3"), (0.18, trace.values_without[:, n], "C0"))
        for offset, values, colour in groups:
            x = n + offset + rng.uniform(-0.08, 0.08, len(values))
            ax.plot(x, values, ".", color=colour, alpha=0.4, markersize=3)
            ax.plot([n + offset - 0.12, n + offset + 0.12], [np.median(values)] * 2, color="black")
    labels = [f"L{s.layer} h{s.head}\nn{s.neuron} d{s.dim}\np_holm={s.p_holm:.1e}" for s in trace.synapses[:shown]]
    ax.set_xticks(range(shown), labels, fontsize=7)
    ax.plot([], [], ".", color="C3", label="with the concept")
    ax.plot([], [], ".", color="C0", label="without")
    ax.set(ylabel="growth per token (held-out sentences)")
    ax.legend(fontsize=8)
    return _save(figure, path)
