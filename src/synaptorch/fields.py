"""Config fields with their help text, and the check of a dict of values against a config dataclass.

The command line makes its flags and the TOML loader its keys from these fields, so a new
setting is one field: its type, default and help in one place.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any

from synaptorch.errors import ConfigError


def setting(default: Any, help: str, on_resume: bool = False) -> Any:
    """A config field: its default, its help text, and whether a resumed run may change it: the
    run's length, and where and how it runs and is observed, but not the model, its data or its
    optimisation."""
    return dataclasses.field(default=default, metadata={"help": help, "on_resume": on_resume})


def check_positive_ints(config: object, names: tuple[str, ...]) -> None:
    """Refuse any field of `names` that is not a positive integer (a bool is not one)."""
    for name in names:
        value = getattr(config, name)
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise ConfigError(f"{name} must be a positive integer, got {value!r}")


def field_types(cls: type) -> dict[str, tuple[type, ...]]:
    """The accepted types of each field of a config dataclass (NoneType for an optional field)."""
    hints = typing.get_type_hints(cls)
    return {
        f.name: typing.get_args(hints[f.name]) if isinstance(hints[f.name], types.UnionType) else (hints[f.name],)
        for f in dataclasses.fields(cls)
    }


def _fits(value: object, accepted: tuple[type, ...]) -> bool:
    if isinstance(value, bool):  # bool is an int to Python, not to a config
        return bool in accepted
    if isinstance(value, int) and float in accepted:
        return True
    for kind in accepted:
        if typing.get_origin(kind) is tuple:  # tuple[int, ...], a list once read from JSON or TOML
            (item, *_) = typing.get_args(kind)
            if isinstance(value, list | tuple) and all(_fits(v, (item,)) for v in value):
                return True
    return isinstance(value, tuple(t for t in accepted if t is not bool and typing.get_origin(t) is None))


def check_values(cls: type, values: object, section: str) -> dict:
    """`values` as a dict of known fields of `cls`, each of its field's type, else a ConfigError."""
    if not isinstance(values, dict):
        raise ConfigError(f"[{section}] must be a table of settings, got {values!r}")
    accepted = field_types(cls)
    unknown = sorted(set(values) - set(accepted))
    if unknown:
        raise ConfigError(f"unknown {section} setting(s): {', '.join(unknown)}; known: {', '.join(accepted)}")
    for name, value in values.items():
        if not _fits(value, accepted[name]):
            names = " or ".join("none" if t is type(None) else t.__name__ for t in accepted[name])
            raise ConfigError(f"{section} setting {name} must be {names}, got {value!r}")
    return values
