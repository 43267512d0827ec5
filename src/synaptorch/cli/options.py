"""What the verbs share: user errors as one line, the device option, and flags made from config fields."""

from __future__ import annotations

import functools
import signal
import sys
from collections.abc import Callable, Iterable
from dataclasses import MISSING, fields

import click

from synaptorch.device import DEVICE_CHOICES, check_device_spec
from synaptorch.errors import ConfigError, SynaptorchError
from synaptorch.fields import field_types


def user_errors(command: Callable) -> Callable:
    """User errors become one stderr line and exit code 2; a stop signal exits 128 + its number."""
    import torch.distributed

    from synaptorch.train.trainer import RunInterrupted

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except SynaptorchError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(2)
        except OSError as exc:  # an output path that cannot be written: a file where a folder must be
            click.echo(f"error: {exc.strerror or exc}: {exc.filename}" if exc.filename else f"error: {exc}", err=True)
            sys.exit(2)
        except RuntimeError as exc:
            if not torch.distributed.is_initialized():
                raise
            # With several processes, a failed collective means another process died or hung.
            first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            click.echo(f"error: a training process failed or stopped answering: {first_line}", err=True)
            sys.exit(1)
        except RunInterrupted as exc:
            click.echo(f"interrupted by {exc}", err=True)
            sys.exit(128 + exc.signum)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(128 + signal.SIGINT)

    return wrapper


class DeviceType(click.ParamType):
    """auto, cpu, cuda, cuda:N or mps; whether this machine has it is checked when it is used."""

    name = "|".join(DEVICE_CHOICES) + "|cuda:N"

    def convert(self, value, param, ctx):
        try:
            return check_device_spec(value)
        except ConfigError as exc:
            self.fail(str(exc), param, ctx)


DEVICE = DeviceType()


def device_option(default: str | None = "auto", help: str = "Device to run on.") -> Callable:
    return click.option("--device", type=DEVICE, default=default, show_default=default is not None, help=help)


def apply(command: Callable, options: Iterable[Callable]) -> Callable:
    """Give `command` the click options, listed in --help in their order."""
    for option in reversed(list(options)):
        command = option(command)
    return command


class FloatsType(click.ParamType):
    """Comma-separated numbers, such as 0.97,0.99,0.999,1."""

    name = "FLOAT,..."

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        try:
            return tuple(float(item) for item in str(value).split(","))
        except ValueError:
            self.fail(f"{value!r} is not a comma-separated list of numbers", param, ctx)


_CLICK_TYPES = {int: click.INT, float: click.FLOAT, str: click.STRING, tuple[float, ...]: FloatsType()}


def _with_default(help: str, default: object) -> str:
    """The help with the default it shows (the option's own default is None: given or not)."""
    return help if default is None or "[default:" in help else f"{help}  [default: {default}]"


def field_options(config_classes: Iterable[type], defaults: dict) -> list[Callable]:
    """A flag per field of the config dataclasses that has help text (`fields.setting`), with its type.

    Flags default to None, so that a command tells the settings given from those left to the
    preset (or, on resume, to the saved run); `defaults` gives the value --help shows. A field
    of several classes gets one flag; one that only some have says which.
    """
    classes = list(config_classes)
    seen: dict[str, list[type]] = {}
    for cls in classes:
        for f in fields(cls):
            if "help" in f.metadata:
                seen.setdefault(f.name, []).append(cls)
    options = []
    for name, owners in seen.items():
        owner = owners[0]
        f = next(f for f in fields(owner) if f.name == name)
        help = f.metadata["help"]
        if len(owners) < len(classes):
            labels = ", ".join(c.__name__.removesuffix("Config") for c in owners)
            help = f"{labels}: {help}"
        default = defaults.get(name, f.default if f.default is not MISSING else None)
        flag = "--" + name.replace("_", "-")
        accepted = [t for t in field_types(owner)[name] if t is not type(None)]
        if accepted == [bool]:
            options.append(
                click.option(f"{flag}/--no-{flag[2:]}", name, default=None, help=_with_default(help, default))
            )
            continue
        param = DEVICE if name == "device" else _CLICK_TYPES[accepted[0]]
        options.append(click.option(flag, name, type=param, default=None, help=_with_default(help, default)))
    return options
