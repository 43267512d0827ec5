"""Looking inside BDH: sparsity, Hebbian synapses, monosemantic neurons and the neuron graph.

The names below are imported from their submodules on first use: importing one submodule (the
command line imports each where it needs it) runs this file first, and importing every other
submodule from here would make each of them depend on all the rest, report.py included.
"""

from importlib import import_module

_SUBMODULE = {
    "NeuronCollector": "neurons",
    "NeuronSelectivity": "neurons",
    "Sparsity": "sparsity",
    "SparsityCounter": "sparsity",
    "Trace": "synapses",
    "build_report": "report",
    "concept_pattern": "text",
    "encode_text": "text",
    "fit_power_law": "stats",
    "graph_stats": "graph",
    "holm": "stats",
    "mann_whitney_u": "stats",
    "measure_activity": "report",
    "neuron_graphs": "graph",
    "neuron_matrices": "graph",
    "threshold_graph": "graph",
    "trace_concept": "synapses",
}

__all__ = sorted(_SUBMODULE)


def __getattr__(name: str):
    if name in _SUBMODULE:
        return getattr(import_module(f"{__name__}.{_SUBMODULE[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
