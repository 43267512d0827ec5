"""The `synaptorch` command line: train, distill, generate, eval, spike-eval, info, convert, inspect.

Every user error (a `SynaptorchError`) ends as one line on stderr and exit code 2.
"""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path

import click
import torch

from synaptorch.errors import CheckpointError, ConfigError, DataError, SynaptorchError
from synaptorch.train.config import DEFAULT_PRESET, PRESETS


def user_errors(command):
    """Turn user errors into one stderr line and exit code 2; Ctrl-C into exit code 130."""

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
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)

    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="synaptorch")
def main() -> None:
    """synaptorch: brain-inspired language models on PyTorch (BDH, the Dragon Hatchling)."""


# --- train ----------------------------------------------------------------------------------

MODEL_FLAGS = ("n_layer", "n_embd", "n_head", "n_neuron", "mlp_ratio", "dropout")
TRAIN_FLAGS = (
    "data",
    "tokenizer",
    "val_fraction",
    "batch_size",
    "block_size",
    "grad_accum",
    "max_steps",
    "lr",
    "min_lr",
    "warmup_steps",
    "weight_decay",
    "grad_clip",
    "eval_interval",
    "eval_tokens",
    "log_interval",
    "keep_last",
    "seed",
    "device",
    "compile",
    "recompute",
    "max_time",
)


PRESET_HELP = "; ".join(f"{arch}: {', '.join(names)}" for arch, names in PRESETS.items())


# The options of a training run, shared by `train` and `distill`.
RUN_OPTIONS = [
    click.option(
        "--model", "architecture", help=f"Architecture: {', '.join(PRESETS)}.  [default: the config file's, else bdh]"
    ),
    click.option(
        "--preset",
        help=f"Named configuration ({PRESET_HELP}).  [default: the config file's preset, else {DEFAULT_PRESET}]",
    ),
    click.option(
        "--config", "config_file", type=click.Path(dir_okay=False), help="TOML file with [model] and [train]."
    ),
    click.option("--resume", is_flag=True, help="Continue the latest checkpoint in --out exactly where it stopped."),
    click.option("--data", help="Corpus: pydoc (embedded), shakespeare, a text file or a folder.  [default: pydoc]"),
    click.option("--tokenizer", help="'bytes' or a tokenizer.json file.  [default: bytes; distill: the teacher's]"),
    click.option(
        "--val-fraction", type=float, help="Share of the corpus (its end) kept for validation.  [default: 0.1]"
    ),
    click.option("--n-layer", type=int, help="Layers (in BDH all share one set of weights)."),
    click.option("--n-embd", type=int, help="Width d of the residual stream."),
    click.option("--n-head", type=int, help="Heads."),
    click.option("--n-neuron", type=int, help="BDH: neurons N per head (even)."),
    click.option("--mlp-ratio", type=int, help="GPT: width of the MLP over n_embd."),
    click.option("--dropout", type=float, help="Dropout (BDH: on the neuron activations)."),
    click.option("--batch-size", type=int, help="Sequences per micro-batch."),
    click.option("--block-size", type=int, help="Tokens per training sequence."),
    click.option("--grad-accum", type=int, help="Micro-batches per optimizer step."),
    click.option("--max-steps", type=int, help="Optimizer steps; the cosine schedule ends here."),
    click.option("--lr", type=float, help="Peak learning rate."),
    click.option("--min-lr", type=float, help="Learning rate at the end of the cosine decay."),
    click.option("--warmup-steps", type=int, help="Linear warm-up steps."),
    click.option("--weight-decay", type=float, help="AdamW weight decay of matrices."),
    click.option("--grad-clip", type=float, help="Clip the gradient norm to this (0: off)."),
    click.option("--eval-interval", type=int, help="Evaluate and save a checkpoint every K steps."),
    click.option("--eval-tokens", type=int, help="Validation tokens per evaluation (0: the whole split)."),
    click.option("--log-interval", type=int, help="Write train loss to metrics.jsonl every K steps."),
    click.option("--keep-last", type=int, help="Checkpoints kept in --out."),
    click.option("--seed", type=int, help="Seed of weights, dropout and data order."),
    click.option("--device", help="auto, cpu or cuda (bf16 autocast on CUDA)."),
    click.option("--compile/--no-compile", default=None, help="torch.compile the model."),
    click.option(
        "--recompute/--no-recompute",
        default=None,
        help="Recompute layers in the backward pass: less memory, more time.",
    ),
    click.option("--max-time", type=float, help="Stop after this many seconds, with a checkpoint (0: no limit)."),
    click.option("--sample-tokens", default=300, show_default=True, help="Tokens to sample from the model at the end."),
    click.option("--quiet", is_flag=True, help="No progress bar and no evaluation lines."),
]


def run_options(command):
    """Give a command the RUN_OPTIONS, listed in --help in their order."""
    for option in reversed(RUN_OPTIONS):
        command = option(command)
    return command


@main.command()
@click.option("--out", help="Run folder for checkpoints and metrics.jsonl.  [default: runs/MODEL]")
@run_options
@user_errors
def train(architecture, preset, config_file, out, resume, sample_tokens, quiet, **flags) -> None:
    """Train a language model; prints validation loss as it goes and a sample at the end.

    Flags override the TOML file, which overrides the preset. With --resume, the saved run's
    settings are used and only --max-steps and --max-time may change.
    """
    from synaptorch.train.trainer import Trainer

    run = _run_config(architecture, preset, config_file, flags)
    trainer = Trainer(run, out or f"runs/{run.architecture}", resume=resume, progress=not quiet)
    click.echo(f"training {_describe_run(trainer)}")
    result = trainer.fit()
    folder = trainer.last_checkpoint or trainer.save()
    if sample_tokens > 0:
        _print_sample(trainer, sample_tokens)
    click.echo(json.dumps({"checkpoint": str(folder), "step": trainer.step, "tokens": trainer.tokens_seen, **result}))


def _run_config(architecture, preset, config_file, flags):
    from synaptorch.train.config import build_run_config

    return build_run_config(
        preset,
        config_file,
        default_preset=DEFAULT_PRESET,
        architecture=architecture,
        model_overrides={k: flags[k] for k in MODEL_FLAGS},
        train_overrides={k: flags[k] for k in TRAIN_FLAGS},
    )


def _describe_run(trainer) -> str:
    n_params = sum(p.numel() for p in trainer.model.parameters())
    return (
        f"{trainer.run.architecture} ({n_params:,} parameters) on {trainer.corpus.name}: "
        f"{len(trainer.corpus.split('train')):,} train / {len(trainer.corpus.split('val')):,} val tokens, "
        f"device {trainer.device}, from step {trainer.step}"
    )


def _print_sample(trainer, n_tokens: int) -> None:
    from synaptorch.models.sampling import generate

    prompt = torch.tensor([trainer.tokenizer.encode("\n")], device=trainer.device)
    ids = generate(trainer.model, prompt, n_tokens, temperature=0.8, top_k=50, seed=trainer.cfg.seed)
    click.echo("--- sample ---")
    click.echo(trainer.tokenizer.decode(ids[0].tolist()).strip("\n"))
    click.echo("--------------")


# --- distill --------------------------------------------------------------------------------


@main.command()
@click.option("--teacher", required=True, help="smollm2, a .gguf file, a Hugging Face model folder, or a checkpoint.")
@click.option("--cache", help="Teacher cache folder: filled once if missing, then read; refused if stale.")
@click.option("--alpha", default=0.5, show_default=True, help="Weight of the data's cross-entropy (1: data alone).")
@click.option("--tau", default=1.0, show_default=True, help="Temperature of the KL term (scaled by tau^2).")
@click.option(
    "--top-k", type=int, help="Teacher ids kept per position, 0 for all.  [default: 64 with --cache, else all]"
)
@click.option("--context", default=256, show_default=True, help="Teacher window while filling the cache.")
@click.option("--precompute-only", is_flag=True, help="Fill the --cache and stop; prints a JSON line about it.")
@click.option("--out", default="runs/distill", show_default=True, help="Run folder for checkpoints and metrics.jsonl.")
@run_options
@user_errors
def distill(
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
    `train`; with --resume the saved run's settings (distillation ones included) are used.
    """
    from synaptorch.train.distill import DistillConfig, DistillTrainer
    from synaptorch.train.teacher import load_teacher
    from synaptorch.train.trainer import pick_device

    if precompute_only and cache is None:
        raise ConfigError("--precompute-only needs --cache")
    model = load_teacher(teacher, device=pick_device(flags["device"] or "auto"))
    if flags["tokenizer"] is None:
        flags["tokenizer"] = model.tokenizer_spec
    settings = DistillConfig(alpha=alpha, tau=tau, top_k=top_k, context=context)
    run = _run_config(architecture, preset, config_file, flags)
    if precompute_only:
        _precompute(model, settings, cache, run.train, quiet)
        return
    trainer = DistillTrainer(run, out, model, settings, cache=cache, resume=resume, progress=not quiet)
    click.echo(
        f"distilling {model.name} into {_describe_run(trainer)}; alpha {trainer.distill.alpha}, tau "
        f"{trainer.distill.tau}, top-k {trainer.distill.top_k or 'all'}, "
        + (f"cache {cache or trainer.cache}" if trainer.cache else "teacher run on each batch")
    )
    result = trainer.fit()
    folder = trainer.last_checkpoint or trainer.save()
    if sample_tokens > 0:
        _print_sample(trainer, sample_tokens)
    click.echo(json.dumps({"checkpoint": str(folder), "step": trainer.step, "tokens": trainer.tokens_seen, **result}))


def _precompute(teacher, settings, cache, train_config, quiet) -> None:
    import time

    from synaptorch.data.corpus import load_corpus
    from synaptorch.train.distill import check_student_tokenizer, open_teacher_cache

    check_student_tokenizer(teacher, train_config.tokenizer)
    corpus = load_corpus(train_config.data, teacher.tokenizer, train_config.val_fraction)
    start = time.perf_counter()
    opened, filled = open_teacher_cache(cache, teacher, corpus, settings, progress=not quiet)
    header = {k: v for k, v in opened.header.items() if k != "teacher_name"}
    record = {"cache": str(cache), "filled": filled, "seconds": round(time.perf_counter() - start, 3), **header}
    click.echo(json.dumps(record))


# --- generate -------------------------------------------------------------------------------


@main.command()
@click.option("--checkpoint", required=True, help="Checkpoint folder, or a run folder (its latest checkpoint).")
@click.option("--prompt", default="\n", show_default=repr("\n"), help="Text to continue.")
@click.option("--max-new-tokens", default=500, show_default=True, type=int)
@click.option("--temperature", default=0.8, show_default=True, type=float, help="0 is greedy.")
@click.option("--top-k", default=0, show_default=True, type=int, help="Keep the k most likely tokens (0: all).")
@click.option("--top-p", default=1.0, show_default=True, type=float, help="Nucleus sampling mass (1: off).")
@click.option("--seed", type=int, help="Seed for reproducible samples.")
@click.option("--device", default="auto", show_default=True)
@click.option("--compile", "compile_step", is_flag=True, help="BDH: compile the per-token step (a one-off cost).")
@user_errors
def generate(checkpoint, prompt, max_new_tokens, temperature, top_k, top_p, seed, device, compile_step) -> None:
    """Stream a continuation of --prompt; memory and time per token do not grow with context."""
    from synaptorch.checkpoint import load_checkpoint_tokenizer, load_model
    from synaptorch.data.tokenizer import StreamDecoder
    from synaptorch.models.sampling import stream_tokens
    from synaptorch.train.trainer import pick_device

    dev = pick_device(device)
    model = load_model(checkpoint, map_location=dev)
    if compile_step and hasattr(model, "compile_step"):
        model.compile_step()
    tokenizer = load_checkpoint_tokenizer(checkpoint)
    ids = tokenizer.encode(prompt)
    if not ids:
        raise DataError("the prompt is empty after tokenization")
    _check_vocab(model, tokenizer)
    decoder = StreamDecoder(tokenizer)
    click.echo(prompt, nl=False)
    tokens = stream_tokens(
        model,
        torch.tensor([ids], device=dev),
        max_new_tokens,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        seed=seed,
    )
    for token in tokens:
        click.echo(decoder.push(int(token[0])), nl=False)
    click.echo(decoder.flush())


def _check_vocab(model, tokenizer) -> None:
    if model.config.vocab_size != tokenizer.vocab_size:
        raise DataError(
            f"vocabulary mismatch: the model has {model.config.vocab_size} tokens, the tokenizer {tokenizer.vocab_size}"
        )


# --- eval -----------------------------------------------------------------------------------


@main.command(name="eval")
@click.option("--checkpoint", required=True, help="Checkpoint folder, or a run folder (its latest checkpoint).")
@click.option("--data", default="pydoc", show_default=True, help="Corpus: pydoc, shakespeare, a file or a folder.")
@click.option("--split", type=click.Choice(["val", "train", "all"]), default="val", show_default=True)
@click.option("--val-fraction", default=0.1, show_default=True, type=float)
@click.option("--tokenizer", help="tokenizer.json to use instead of the checkpoint's own.")
@click.option("--block-size", type=int, help="Window length.  [default: the training block size, else 256]")
@click.option("--batch-size", default=16, show_default=True, type=int)
@click.option("--max-tokens", default=0, show_default=True, type=int, help="Score at most this many tokens (0: all).")
@click.option("--device", default="auto", show_default=True)
@user_errors
def eval_command(checkpoint, data, split, val_fraction, tokenizer, block_size, batch_size, max_tokens, device) -> None:
    """Loss (nats per token) and bits per byte of a checkpoint on a corpus; ends with a JSON line."""
    from synaptorch.checkpoint import load_checkpoint_tokenizer, load_model, read_meta, resolve_checkpoint
    from synaptorch.data.corpus import load_corpus
    from synaptorch.data.tokenizer import load_tokenizer
    from synaptorch.train.trainer import bits_per_byte, evaluate_loss, pick_device

    folder = resolve_checkpoint(checkpoint)
    dev = pick_device(device)
    model = load_model(folder, map_location=dev)
    tok = load_tokenizer(tokenizer) if tokenizer else load_checkpoint_tokenizer(folder)
    _check_vocab(model, tok)
    if block_size is None:
        block_size = read_meta(folder).get("train", {}).get("block_size", 256)
    if block_size <= 0 or batch_size <= 0 or max_tokens < 0:
        raise ConfigError("--block-size and --batch-size must be positive, --max-tokens >= 0")
    if not 0 < val_fraction < 1:
        raise ConfigError(f"--val-fraction must be in (0, 1), got {val_fraction}")
    corpus = load_corpus(data, tok, val_fraction)
    loss, n_tokens = evaluate_loss(model, corpus.split(split), block_size, batch_size, dev, max_tokens)
    record = {
        "checkpoint": str(folder),
        "data": str(data),
        "split": split,
        "tokens": n_tokens,
        "loss": round(loss, 6),
        "bpb": round(bits_per_byte(loss, corpus), 6),
    }
    click.echo(json.dumps(record))


# --- spike-eval -----------------------------------------------------------------------------


@main.command(name="spike-eval")
@click.argument("checkpoint")
@click.option("--steps", default="1,2,4,8,16,32,64", show_default=True, help="Time steps per token, comma-separated.")
@click.option("--data", default="pydoc", show_default=True, help="Corpus: pydoc, shakespeare, a file or a folder.")
@click.option("--split", type=click.Choice(["val", "train", "all"]), default="val", show_default=True)
@click.option("--val-fraction", default=0.1, show_default=True, type=float)
@click.option("--block-size", type=int, help="Window length.  [default: the training block size, else 128]")
@click.option("--batch-size", default=16, show_default=True, type=int)
@click.option(
    "--max-tokens",
    default=16384,
    show_default=True,
    type=int,
    help="Score at most this many tokens (0: all).",
)
@click.option(
    "--calibration-tokens",
    default=4096,
    show_default=True,
    type=int,
    help="Tokens from the start of the training split that set the thresholds.",
)
@click.option(
    "--percentile", default=99.9, show_default=True, type=float, help="Threshold: this percentile of the activations."
)
@click.option(
    "--finetune-steps",
    default=0,
    show_default=True,
    type=int,
    help="First train this many steps with the spiking neurons in the loop (surrogate gradients).",
)
@click.option("--finetune-t", default=4, show_default=True, type=int, help="Time steps per token while fine-tuning.")
@click.option("--finetune-lr", default=3e-4, show_default=True, type=float)
@click.option("--device", default="auto", show_default=True)
@user_errors
def spike_eval(checkpoint, steps, data, split, val_fraction, block_size, batch_size, max_tokens, **options) -> None:
    """Run a BDH checkpoint with integrate-and-fire neurons for T steps per token, against its ReLU neurons.

    Prints the ReLU model's figures, a row per T (loss, accuracy, agreement with the ReLU model's
    next token, KL to it, spikes and synaptic operations per token) and a JSON line.
    """
    from synaptorch.checkpoint import load_checkpoint_tokenizer, load_model, read_meta, resolve_checkpoint
    from synaptorch.data.corpus import load_corpus
    from synaptorch.models import BDH
    from synaptorch.train.spiking import as_records, convert, evaluate_spiking, finetune_spiking, parse_time_steps
    from synaptorch.train.trainer import pick_device

    time_steps = parse_time_steps(steps)
    if not 0 < val_fraction < 1:
        raise ConfigError(f"--val-fraction must be in (0, 1), got {val_fraction}")
    # Checked before the model is converted and fine-tuned, which take minutes.
    if (block_size is not None and block_size < 1) or batch_size < 1 or options["calibration_tokens"] < 1:
        raise ConfigError("--block-size, --batch-size and --calibration-tokens must be positive")
    if max_tokens < 0 or options["finetune_steps"] < 0:
        raise ConfigError("--max-tokens and --finetune-steps must be >= 0")
    folder = resolve_checkpoint(checkpoint)
    model = load_model(folder, map_location=pick_device(options["device"])).eval()
    if not isinstance(model, BDH):
        raise ConfigError(f"spike-eval runs BDH checkpoints; {folder} holds a {model.architecture} model")
    tok = load_checkpoint_tokenizer(folder)
    _check_vocab(model, tok)
    if block_size is None:
        block_size = read_meta(folder).get("train", {}).get("block_size", 128)
    corpus = load_corpus(data, tok, val_fraction)
    train_split = corpus.split("train")
    spiking = convert(model, train_split[: options["calibration_tokens"]], block_size, options["percentile"])
    record: dict = {"checkpoint": str(folder), "data": str(data), "split": split}
    if options["finetune_steps"]:
        losses = finetune_spiking(
            spiking,
            train_split,
            options["finetune_steps"],
            options["finetune_t"],
            block_size,
            lr=options["finetune_lr"],
        )
        first, last = round(losses[0], 6), round(losses[-1], 6)
        record["finetune"] = {"steps": len(losses), "t": options["finetune_t"], "first_loss": first, "last_loss": last}
        click.echo(
            f"fine-tuned {len(losses)} steps at T = {options['finetune_t']}: "
            f"train loss {losses[0]:.4f} -> {losses[-1]:.4f}"
        )
    relu, results = evaluate_spiking(
        model, spiking, corpus.split(split), time_steps, block_size, batch_size, max_tokens
    )
    click.echo(
        f"ReLU model: loss {relu.loss:.4f}, accuracy {relu.accuracy:.4f}, {relu.active_per_token:,.0f} active "
        f"neurons/token, {relu.macs_per_token:,.0f} MACs/token in the synapses spikes replace "
        f"({relu.active_macs_per_token:,.0f} touching only active neurons), "
        f"{relu.analog_macs_per_token:,.0f} analog MACs/token in both"
    )
    header = ("T", "loss", "accuracy", "agreement", "KL", "spikes/tok", "ops/tok", "ops/MACs")
    click.echo(" ".join(f"{name:>{width}}" for name, width in zip(header, (5, 8, 9, 10, 9, 11, 11, 8), strict=True)))
    for r in results:
        click.echo(
            f"{r.steps:>5} {r.loss:>8.4f} {r.accuracy:>9.4f} {r.agreement:>10.4f} {r.kl:>9.5f} "
            f"{r.spikes_per_token:>11,.0f} {r.synaptic_ops_per_token:>11,.0f} "
            f"{r.synaptic_ops_per_token / relu.macs_per_token:>8.3f}"
        )
    click.echo(json.dumps(record | as_records(relu, results)))


# --- info -----------------------------------------------------------------------------------


@main.command()
@click.argument("checkpoint")
@user_errors
def info(checkpoint) -> None:
    """Config, parameter count and training state of a checkpoint (or a run's latest)."""
    from synaptorch.checkpoint import TRAINER, load_model, read_meta, resolve_checkpoint
    from synaptorch.train.trainer import read_metrics

    folder = resolve_checkpoint(checkpoint)
    meta = read_meta(folder)
    model = load_model(folder)
    click.echo(f"checkpoint   {folder}")
    click.echo(f"architecture {meta['architecture']}")
    click.echo(f"parameters   {sum(p.numel() for p in model.parameters()):,}")
    click.echo(f"tokenizer    {meta.get('tokenizer', 'bytes')}")
    for key, value in meta["model"].items():
        click.echo(f"model.{key:<12} {value}")
    if "step" in meta:
        click.echo(f"step         {meta['step']}")
        click.echo(f"tokens seen  {meta.get('tokens_seen', 0):,}")
        corpus = meta.get("corpus", {})
        click.echo(f"corpus       {corpus.get('name', '?')} (sha256 {corpus.get('sha256', '?')[:12]})")
        click.echo(f"resumable    {'yes' if (folder / TRAINER).is_file() else 'no'}")
    evals = [r for r in read_metrics(folder.parent) if "val_loss" in r and r["step"] <= meta.get("step", 0)]
    if evals:
        click.echo(f"val loss     {evals[-1]['val_loss']:.4f} nats/token at step {evals[-1]['step']}")


# --- convert --------------------------------------------------------------------------------


@main.command()
@click.argument("src", type=click.Path(dir_okay=False))
@click.argument("dst", type=click.Path(file_okay=False))
@click.option("--n-layer", default=6, show_default=True, type=int, help="Layers of the reference model.")
@user_errors
def convert(src, dst, n_layer) -> None:
    """Convert a checkpoint of the reference BDH code (a torch state_dict .pt) into DST."""
    from synaptorch.models.reference import load_reference_checkpoint

    if Path(dst).exists():
        raise CheckpointError(f"{dst} already exists; choose a new folder")
    model = load_reference_checkpoint(src, n_layer=n_layer)
    model.save_pretrained(dst, converted_from=str(src))
    click.echo(f"wrote {dst}: {model.config.n_params:,} parameters, {json.dumps(model.config.to_dict())}")


# --- inspect --------------------------------------------------------------------------------


@main.group()
def inspect() -> None:
    """Look inside a BDH checkpoint: sparsity, Hebbian synapses, neurons and the neuron graph."""


def _inspected(checkpoint: str, text_file: str | None, window: int | None, device: str):
    """The model, its tokenizer, the text (None without --text) and the window length."""
    from synaptorch.analysis.recording import check_bdh
    from synaptorch.checkpoint import load_checkpoint_tokenizer, load_model, read_meta, resolve_checkpoint
    from synaptorch.train.trainer import pick_device

    folder = resolve_checkpoint(checkpoint)
    text = None
    if text_file is not None:
        path = Path(text_file)
        if not path.is_file():
            raise DataError(f"text file not found: {text_file}")
        text = path.read_text(encoding="utf-8", errors="replace")
        if not text.strip():
            raise DataError(f"text file {text_file} is empty")
    model = check_bdh(load_model(folder, map_location=pick_device(device))).eval()
    tokenizer = load_checkpoint_tokenizer(folder)
    _check_vocab(model, tokenizer)
    if window is None:
        window = read_meta(folder).get("train", {}).get("block_size", 256)
    if window <= 0:
        raise ConfigError(f"--window must be positive, got {window}")
    return model, tokenizer, text, window


def _concept(words: str | None, regex: str | None, required: bool):
    from synaptorch.analysis.text import concept_pattern

    if words is None and regex is None:
        if required:
            raise DataError("give a concept with --concept WORD[,WORD...] or --concept-regex RE")
        return None
    return concept_pattern(words.split(",") if words else None, regex)


def text_options(command):
    options = [
        click.argument("checkpoint"),
        click.option("--text", "text_file", required=True, help="Text file to read the model's activity on."),
        click.option(
            "--window",
            type=int,
            help="Tokens per window, each read from a fresh synapse state.  [default: the training block size]",
        ),
        click.option("--device", default="cpu", show_default=True),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def concept_options(command):
    command = click.option("--concept-regex", help="The concept as a regular expression over the text.")(command)
    return click.option("--concept", help="The concept as comma-separated words (whole words, any case).")(command)


@inspect.command()
@text_options
@concept_options
@click.option("--out", required=True, help="Folder for report.html, the PNG figures, CSV tables and summary.json.")
@click.option("--keep", default=0.05, show_default=True, help="Share of neuron pairs kept as graph edges.")
@click.option("--top", default=10, show_default=True, help="Synapses to rank and test for the concept.")
@click.option("--holdout", default=0.3, show_default=True, help="Share of the text kept for the selectivity test.")
@click.option("--baselines", default=5, show_default=True, help="Rewired graphs in the modularity baseline.")
@click.option("--seed", default=0, show_default=True, help="Seed of Louvain and of the rewiring.")
@user_errors
def report(checkpoint, text_file, window, device, concept, concept_regex, out, keep, top, holdout, baselines, seed):
    """Write an HTML report of a checkpoint on a text into --out; prints a JSON summary line.

    Without a concept the report has no synapse section.
    """
    from synaptorch.analysis.report import build_report

    model, tokenizer, text, window = _inspected(checkpoint, text_file, window, device)
    pattern = _concept(concept, concept_regex, required=False)
    summary = build_report(
        model,
        tokenizer,
        text,
        out,
        window=window,
        pattern=pattern,
        keep=keep,
        top=top,
        holdout=holdout,
        seed=seed,
        baselines=baselines,
        title=f"BDH inspection of {checkpoint} on {Path(text_file).name}",
    )
    click.echo(json.dumps(summary))


@inspect.command()
@text_options
@user_errors
def sparsity(checkpoint, text_file, window, device):
    """Share of firing neurons per layer and head over a text, and never/always active neurons (JSON)."""
    from synaptorch.analysis.report import measure_activity

    model, tokenizer, text, window = _inspected(checkpoint, text_file, window, device)
    result = measure_activity(model, tokenizer, text, window).sparsity
    click.echo(json.dumps({**result.summary(), "per_layer": result.per_layer()}))


@inspect.command()
@text_options
@concept_options
@click.option("--top", default=10, show_default=True, help="Synapses to rank and test.")
@click.option("--holdout", default=0.3, show_default=True, help="Share of the text kept for the selectivity test.")
@user_errors
def trace(checkpoint, text_file, window, device, concept, concept_regex, top, holdout):
    """The synapses that grow most on a concept, tested on held-out sentences (JSON)."""
    from synaptorch.analysis.synapses import trace_concept

    model, tokenizer, text, window = _inspected(checkpoint, text_file, window, device)
    pattern = _concept(concept, concept_regex, required=True)
    result = trace_concept(model, tokenizer, text, pattern, window, top, holdout)
    click.echo(json.dumps({**result.summary(), "top": result.rows()}))


@inspect.command()
@text_options
@click.option("--csv", "csv_path", help="Write the table of every neuron to this CSV file.")
@click.option("--show", default=20, show_default=True, help="Most monosemantic neurons to print.")
@user_errors
def neurons(checkpoint, text_file, window, device, csv_path, show):
    """Each neuron's top tokens and contexts and its monosemanticity; prints the most monosemantic."""
    from synaptorch.analysis.neurons import write_csv
    from synaptorch.analysis.report import measure_activity, most_monosemantic

    if show < 0:
        raise ConfigError(f"--show must be >= 0, got {show}")
    if csv_path and Path(csv_path).is_dir():
        raise ConfigError(f"--csv {csv_path} is a folder; give a file name")
    model, tokenizer, text, window = _inspected(checkpoint, text_file, window, device)
    activity = measure_activity(model, tokenizer, text, window)
    rows = activity.selectivity.rows(activity.encoded, tokenizer, activity.sparsity.x_rate)
    if csv_path:
        write_csv(rows, csv_path)
    for row in most_monosemantic(rows, show):
        click.echo(
            f"L{row['layer']} h{row['head']} n{row['neuron']:<5} mono {row['monosemanticity']:.3f} "
            f"lift {row['lift']:>7.2f} top {row['top_token']:<8} {row['top_contexts'].split(' | ')[0]}"
        )


@inspect.command()
@click.argument("checkpoint")
@click.option("--keep", default=0.05, show_default=True, help="Share of neuron pairs kept as edges.")
@click.option("--baselines", default=5, show_default=True, help="Rewired graphs in the modularity baseline.")
@click.option("--seed", default=0, show_default=True, help="Seed of Louvain and of the rewiring.")
@user_errors
def graph(checkpoint, keep, baselines, seed):
    """Degree power laws and modularity of the neuron graphs E Dx and E Dy per head (JSON)."""
    from synaptorch.analysis.report import graph_rows, graph_summary, measure_graphs

    model, _, _, _ = _inspected(checkpoint, None, 1, "cpu")
    rows = graph_rows(measure_graphs(model, keep, seed, baselines)[0])
    click.echo(json.dumps({"keep": keep, "summary": graph_summary(rows), "per_head": rows}))


if __name__ == "__main__":
    main()
