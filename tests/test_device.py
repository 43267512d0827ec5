"""Devices are checked before use, and a GPU trains in the precision it supports."""

import pytest
import torch

from synaptorch import device as device_module
from synaptorch.device import check_device_spec, pick_device, precision_for
from synaptorch.errors import ConfigError

CPU = torch.device("cpu")


@pytest.mark.parametrize("spec", ["auto", "cpu", "cuda", "cuda:1", "mps"])
def test_known_device_names_pass_the_check(spec):
    assert check_device_spec(spec) == spec


@pytest.mark.parametrize("spec", ["tpu", "cuda:", "cuda:x", "CPU", "", 5, None])
def test_unknown_device_names_are_config_errors(spec):
    with pytest.raises(ConfigError):
        check_device_spec(spec)


def test_devices_this_machine_lacks_are_refused(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert pick_device("auto") == CPU
    assert pick_device("cpu") == CPU
    for spec, fragment in (("cuda", "no CUDA device"), ("cuda:0", "no CUDA device"), ("mps", "no MPS device")):
        with pytest.raises(ConfigError, match=fragment):
            pick_device(spec)


def test_a_cuda_index_beyond_the_machines_gpus_is_refused(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert pick_device("cuda:0") == torch.device("cuda:0")
    with pytest.raises(ConfigError, match="1 CUDA device"):
        pick_device("cuda:3")


@pytest.mark.parametrize(("bf16", "expected"), [(True, (torch.bfloat16, False)), (False, (torch.float16, True))])
def test_a_gpu_without_bf16_trains_in_fp16_with_a_scaled_loss(monkeypatch, bf16, expected):
    monkeypatch.setattr(device_module.torch.cuda, "is_bf16_supported", lambda including_emulation=True: bf16)
    precision = precision_for(torch.device("cuda"))
    assert (precision.dtype, precision.scale_loss) == expected
    assert precision_for(CPU).dtype is None and precision_for(CPU).name == "fp32"
