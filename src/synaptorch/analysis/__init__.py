"""Looking inside BDH: sparsity, Hebbian synapses, monosemantic neurons and the neuron graph."""

from synaptorch.analysis.graph import graph_stats, neuron_graphs, neuron_matrices, threshold_graph
from synaptorch.analysis.neurons import NeuronCollector, NeuronSelectivity
from synaptorch.analysis.report import build_report, measure_activity
from synaptorch.analysis.sparsity import Sparsity, SparsityCounter
from synaptorch.analysis.stats import fit_power_law, mann_whitney_u
from synaptorch.analysis.synapses import Trace, trace_concept
from synaptorch.analysis.text import concept_pattern, encode_text

__all__ = [
    "NeuronCollector",
    "NeuronSelectivity",
    "Sparsity",
    "SparsityCounter",
    "Trace",
    "build_report",
    "concept_pattern",
    "encode_text",
    "fit_power_law",
    "graph_stats",
    "mann_whitney_u",
    "measure_activity",
    "neuron_graphs",
    "neuron_matrices",
    "threshold_graph",
    "trace_concept",
]
