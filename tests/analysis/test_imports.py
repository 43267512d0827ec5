"""Every analysis submodule imports alone: no import cycle through the package's __init__."""

import json
import pkgutil
import subprocess
import sys

import pytest

import synaptorch.analysis

SUBMODULES = sorted(info.name for info in pkgutil.iter_modules(synaptorch.analysis.__path__))

# In one fresh interpreter, imports each module named in argv[1:] with no synaptorch module loaded
# (torch and the rest stay imported: they cannot take part in a cycle of synaptorch's), and prints
# {module: the analysis submodules its import loaded}, or the error it raised.
PROBE = """
import importlib, json, sys
loaded = {}
for module in sys.argv[1:]:
    for name in [m for m in sys.modules if m == "synaptorch" or m.startswith("synaptorch.")]:
        del sys.modules[name]
    try:
        importlib.import_module(module)
    except Exception as error:
        loaded[module] = f"{type(error).__name__}: {error}"
        continue
    loaded[module] = sorted(m.rsplit(".", 1)[1] for m in sys.modules if m.startswith("synaptorch.analysis."))
print(json.dumps(loaded))
"""


@pytest.fixture(scope="module")
def loaded() -> dict:
    modules = ["synaptorch.analysis", *(f"synaptorch.analysis.{name}" for name in SUBMODULES)]
    done = subprocess.run([sys.executable, "-c", PROBE, *modules], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.mark.parametrize("name", SUBMODULES)
def test_each_submodule_imports_alone(loaded, name):
    modules = loaded[f"synaptorch.analysis.{name}"]
    assert isinstance(modules, list), modules  # else the error the import raised
    assert name in modules
    if name != "report":
        assert "report" not in modules  # report draws on every other submodule, never the reverse


def test_the_package_imports_its_names_on_first_use(loaded):
    assert loaded["synaptorch.analysis"] == []
    assert "trace_concept" in synaptorch.analysis.__all__
    from synaptorch.analysis import build_report, holm
    from synaptorch.analysis.report import build_report as direct
    from synaptorch.analysis.stats import holm as direct_holm

    assert build_report is direct and holm is direct_holm
    with pytest.raises(AttributeError):
        synaptorch.analysis.nothing_here  # noqa: B018
