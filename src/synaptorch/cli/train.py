"""`synaptorch train` and `synaptorch distill`: training runs into a run folder."""

from __future__ import annotations

import json
import time

import click
import torch

from synaptorch.cli.options import apply, field_options, user_errors
from synaptorch.registry import ARCHITECTURES, model_class
from synaptorch.train.config import DEFAULT_ARCHITECTURE, DEFAULT_PRESET, PRESETS, RunRequest, TrainConfig

MODEL_CLASSES = [model_class(name).config_class for name in ARCHITECTURES]
PRESET_NAMES = sorted({name for presets in PRESETS.values() for name in presets})
MODEL_FIELDS = {f for cls in MODEL_CLASSES for f in cls.__dataclass_fields__}
TRAIN_FIELDS = set(TrainConfig.__dataclass_fields__)


def _model_defaults() -> dict[str, str]:
    """What --help shows as each model setting's default: per architecture where they differ, the
    default preset's value where it sets one."""
    shown = {}
    for name in MODEL_FIELDS:
        values = {}
        for architecture, config_class in zip(ARCHITECTURES, MODEL_CLASSES, strict=True):
            if name in config_class.__dataclass_fields__:
                preset = PRESETS[architecture].get(DEFAULT_PRESET, {}).get("model", {})
                values[architecture] = preset.get(name, config_class.__dataclass_fields__[name].default)
        text = (
            str(next(iter(values.values())))
            if len(set(values.values())) == 1
            else ", ".join(f"{architecture} {value}" for architecture, value in values.items())
        )
        from_preset = any(name in PRESETS[a].get(DEFAULT_PRESET, {}).get("model", {}) for a in values)
        shown[name] = f"{text} (preset {DEFAULT_PRESET})" if from_preset else text
    return shown


def _train_defaults(tokenizer: str) -> dict[str, str]:
    preset = PRESETS[DEFAULT_ARCHITECTURE][DEFAULT_PRESET]["train"]
    given = {"tokenizer": tokenizer, "init_from": "none: new weights"}
    return given | {name: f"{value} (preset {DEFAULT_PRESET})" for name, value in preset.items()}


def run_options(tokenizer_default: str = "bytes"):
    """The options of a training run, shared by `train` and `distill`, listed in --help in their order."""
    options = [
        click.option(
            "--model",
            "architecture",
            type=click.Choice(list(ARCHITECTURES)),
            help="Architecture.  [default: the config file's, else bdh]",
        ),
        click.option(
            "--preset",
            type=click.Choice(PRESET_NAMES),
            help="Named configuration: "
            + "; ".join(f"{arch}: {', '.join(names)}" for arch, names in PRESETS.items())
            + f".  [default: the config file's, else {DEFAULT_PRESET}]",
        ),
        click.option(
            "--config",
            "config_file",
            type=click.Path(dir_okay=False),
            help="TOML file with [model] and [train] tables.  [default: none]",
        ),
        click.option(
            "--resume",
            is_flag=True,
            help="Continue the latest checkpoint in --out exactly; given again, only the run's length, "
            "--device, the intervals, --compile and --recompute may differ from the saved settings, "
            "and --data may name a moved copy of the corpus.",
        ),
        *field_options(MODEL_CLASSES, _model_defaults()),
        *field_options([TrainConfig], _train_defaults(tokenizer_default)),
        click.option("--sample-tokens", default=300, show_default=True, help="Tokens to sample at the end."),
        click.option("--quiet", is_flag=True, help="No progress bar and no evaluation lines."),
    ]
    return lambda command: apply(command, options)


def _request(architecture, preset, config_file, flags: dict) -> RunRequest:
    model = {k: v for k, v in flags.items() if k in MODEL_FIELDS}
    train = {k: v for k, v in flags.items() if k in TRAIN_FIELDS}
    return RunRequest(architecture, preset, config_file, model, train)


@click.command("train")
@click.option("--out", help="Run folder for checkpoints and metrics.jsonl.  [default: runs/MODEL]")
@run_options()
@user_errors
def train_command(architecture, preset, config_file, out, resume, sample_tokens, quiet, **flags) -> None:
    """Train a language model; prints validation loss as it goes and a sample at the end.

    Flags override the TOML file, which overrides the preset. With --resume the saved run's
    settings are kept; flags given again may change only the run's length (--max-steps,
    --max-time), --device, the intervals, --compile and --recompute. A finished run trains
    nothing. SIGINT and SIGTERM stop at the next step boundary with a checkpoint.
    """
    from synaptorch.train.config import new_run_config
    from synaptorch.train.trainer import Trainer

    request = _request(architecture, preset, config_file, flags)
    if resume:
        trainer = Trainer.resume(out or f"runs/{architecture or DEFAULT_ARCHITECTURE}", request, progress=not quiet)
    else:
        run = new_run_config(request)
        out = out or f"runs/{run.architecture}"
        if Trainer.restarted(out):  # the saved settings are this command's
            trainer = Trainer.resume(out, progress=not quiet)
        else:
            trainer = Trainer(run, out, progress=not quiet)
    _echo(trainer, f"training {_describe_run(trainer)}")
    _fit(trainer, sample_tokens)


def _echo(trainer, text: str) -> None:
    """Print for the run: with several processes the main one speaks for all."""
    if trainer.world.is_main:
        click.echo(text)


def _fit(trainer, sample_tokens: int) -> None:
    """Train, then print a sample and the JSON line; a finished run says so and trains nothing."""
    if trainer.finished:
        _echo(
            trainer, f"nothing to train: {trainer.out} is at step {trainer.step} of max_steps {trainer.cfg.max_steps}"
        )
        result = trainer.last_evaluation()
    else:
        result = trainer.fit()
        if sample_tokens > 0 and trainer.world.is_main:
            _print_sample(trainer, sample_tokens)
    trainer.close()
    record = {"checkpoint": str(trainer.last_checkpoint), "step": trainer.step, "tokens": trainer.tokens_seen}
    record.update({k: v for k, v in result.items() if k not in ("step", "tokens")})
    _echo(trainer, json.dumps(record))


def _describe_run(trainer) -> str:
    n_params = sum(p.numel() for p in trainer.model.parameters())
    return (
        f"{trainer.run.architecture} ({n_params:,} parameters) on {trainer.corpus.name}: "
        f"{len(trainer.corpus.split('train')):,} train / {len(trainer.corpus.split('val')):,} val tokens, "
        f"device {trainer.device} ({trainer.precision.name}), from step {trainer.step}"
    )


def _print_sample(trainer, n_tokens: int) -> None:
    from synaptorch.checkpoint import load_model
    from synaptorch.models.sampling import generate

    # A sharded model computes only with all processes; the main one samples from the checkpoint.
    model = load_model(trainer.last_checkpoint, trainer.device) if trainer.sharded else trainer.model
    prompt = torch.tensor([trainer.tokenizer.encode("\n")], device=trainer.device)
    ids = generate(model, prompt, n_tokens, temperature=0.8, top_k=50, seed=trainer.cfg.seed)
    click.echo("--- sample ---")
    click.echo(trainer.tokenizer.decode(ids[0].tolist()).strip("\n"))
    click.echo("--------------")


def distill_options(command):
    from synaptorch.train.distill import DistillConfig

    return apply(command, field_options([DistillConfig], {}))


@click.command("distill")
@click.option("--teacher", required=True, help="smollm2, a .gguf file, a Hugging Face model folder, or a checkpoint.")
@click.option(
    "--cache",
    help="Teacher cache folder: filled once if missing, then read; refused if stale.  [default: none, a live teacher]",
)
@distill_options
@click.option("--precompute-only", is_flag=True, help="Fill the --cache and stop; prints a JSON line about it.")
@click.option("--out", default="runs/distill", show_default=True, help="Run folder for checkpoints and metrics.jsonl.")
@run_options(tokenizer_default="the teacher's")
@user_errors
def distill_command(
    teacher,
    cache,
    alpha,
    tau,
    top_k,
    context,
    precompute_only,
    architecture,
    preset,
    config_file,
    out,
    resume,
    sample_tokens,
    quiet,
    **flags,
) -> None:
    """Train a student on the data and on a teacher's next-token distributions.

    The student uses the teacher's tokenizer. The loss is alpha * cross-entropy on the data +
    (1 - alpha) * tau^2 * KL(teacher || student) at temperature tau. Evaluations add val kl, the
    KL at temperature 1 on the validation windows. The model and training flags are those of
    `train`; with --resume the saved run's settings (distillation ones included) are kept.
    """
    from synaptorch.device import pick_device
    from synaptorch.train.config import new_run_config
    from synaptorch.train.distill import DistillConfig, DistillTrainer, check_precompute, precompute_teacher_cache
    from synaptorch.train.teacher import load_teacher

    given = {"alpha": alpha, "tau": tau, "top_k": top_k, "context": context}
    settings = DistillConfig(**{k: v for k, v in given.items() if v is not None})
    if precompute_only:
        check_precompute(cache, resume)
    model = load_teacher(teacher, device=pick_device(flags["device"] or "auto"))
    request = _request(architecture, preset, config_file, flags)
    if resume:
        trainer = DistillTrainer.resume(
            out, model, cache, request, progress=not quiet, given={k: v for k, v in given.items() if v is not None}
        )
    elif DistillTrainer.restarted(out) and not precompute_only:
        trainer = DistillTrainer.resume(out, model, cache, progress=not quiet)
    else:
        if flags["tokenizer"] is None:
            request.train["tokenizer"] = model.tokenizer_spec
        run = new_run_config(request)
        if precompute_only:
            start = time.perf_counter()
            record = precompute_teacher_cache(cache, model, run.train, settings, progress=not quiet)
            click.echo(json.dumps({**record, "seconds": round(time.perf_counter() - start, 3)}))
            return
        trainer = DistillTrainer(run, out, model, settings, cache=cache, progress=not quiet)
    _echo(
        trainer,
        f"distilling {model.name} into {_describe_run(trainer)}; alpha {trainer.distill.alpha}, tau "
        f"{trainer.distill.tau}, top-k {trainer.distill.top_k or 'all'}, "
        + (f"cache {cache or trainer.cache}" if trainer.cache else "teacher run on each batch"),
    )
    _fit(trainer, sample_tokens)
