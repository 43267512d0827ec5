"""Spiking neurons: step functions over explicit state, surrogate gradients, module wrappers."""

from synaptorch.neurons.delays import SynapticDelay
from synaptorch.neurons.encoders import delta_encode, latency_encode, raster_plot, rate_encode
from synaptorch.neurons.fused import lif_sequence
from synaptorch.neurons.lif import (
    ALIF,
    IF,
    LI,
    LIF,
    ALIFCell,
    ALIFState,
    IFCell,
    LIFCell,
    LIFState,
    alif_step,
    li_step,
    lif_step,
)
from synaptorch.neurons.parameters import ALIFParameters, LIFParameters
from synaptorch.neurons.surrogate import SURROGATES, spike

__all__ = [
    "ALIF",
    "IF",
    "LI",
    "LIF",
    "SURROGATES",
    "ALIFCell",
    "ALIFParameters",
    "ALIFState",
    "IFCell",
    "LIFCell",
    "LIFParameters",
    "LIFState",
    "SynapticDelay",
    "alif_step",
    "delta_encode",
    "latency_encode",
    "li_step",
    "lif_sequence",
    "lif_step",
    "raster_plot",
    "rate_encode",
    "spike",
]
