"""Continual language modelling with BDH: pydoc, then tiny Shakespeare, by fine-tuning and by HLOP; one JSON line.

    python benchmarks/continual_lm.py                     # base 400 steps, 200 per method; about 9 minutes on 1 core
    python benchmarks/continual_lm.py --out runs/cl       # the same, keeping the base checkpoint
    python benchmarks/continual_lm.py --base runs/cl/base/step-0000400 --seed 1   # another draw from that base
    python benchmarks/continual_lm.py --quick             # a smoke run of about a minute

A base BDH (cpu-tiny) learns the pydoc reference text (`--base-steps`, the trainer's own loop).
HLOP's lateral neurons then learn, by Oja's subspace rule, the principal subspaces of the inputs
of Dx, Dy and E on `--oja-batches` pydoc training batches (`synaptorch.continual.bdh`; `--ranks`
rows per map), frozen. Two copies of the base continue on tiny Shakespeare for `--steps` steps,
on the same batches with the same AdamW settings (fresh optimizer, warm-up, cosine schedule,
gradient clipping): plain fine-tuning, and HLOP, whose Dx, Dy and E gradients and updates are
projected out of those subspaces (embedding and readout train freely in both). Both corpora are
scored on their validation split (the last 10%, `--eval-tokens` tokens each) in nats per byte
(the byte tokenizer: one token per byte) before the second phase and every `--eval-every` steps.

The default ranks, 64 of d = 128 for Dx and Dy and 256 of nh N = 1024 for E, leave half of the
residual directions and three quarters of the neuron products free for the second corpus; on the
400-step base the best subspaces of those sizes hold about 97% (Dx, Dy) and 91% (E) of pydoc's
input energy, and the record gives what Oja's rows hold next to that optimum. Oja's learning
rates follow the inputs' scale: about 1 per entry squared for the layer-normed inputs of Dx and
Dy, about 0.04 for the sparse xy, whence the larger rate for E (1.0 there diverges).

Comparison at equal Shakespeare loss: the level is the higher of the two methods' final
Shakespeare losses, which both reach; each method's pydoc loss is interpolated linearly between
its checkpoints at the first point its Shakespeare loss reaches that level, and the rise is that
less the base's pydoc loss. Target (the issue's): at equal Shakespeare loss, within 0.05 nats,
HLOP's pydoc rise at most half of fine-tuning's. The interpolation makes the two Shakespeare
losses equal; that HLOP gives up little of the second corpus is asked here by the final
Shakespeare losses of the two methods being within 0.05 nats too, and `target_met` needs both.
"""

from __future__ import annotations

import argparse
import copy
import itertools
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

import torch
import torch.nn.functional as F

from merge import train

from common import SHAKESPEARE, emit

FIRST, SECOND = "pydoc", "shakespeare"
RISE_RATIO = 0.5
WITHIN = 0.05
MAPS = ("encoder_x", "encoder_y", "decoder")


def phase_step(model, optimizer, x, y, lr: float, grad_clip: float, projectors=None) -> None:
    """One step of the second phase, the trainer's step with HLOP's projections between backward and update.

    `common.training_step` steps the optimizer straight after backward, with no room for them.
    """
    from synaptorch.device import autocast_for

    for group in optimizer.param_groups:
        group["lr"] = lr
    model.train()
    with autocast_for(x.device):
        logits = model(x)
    F.cross_entropy(logits.float().flatten(0, 1), y.flatten()).backward()
    if projectors is not None:
        projectors.project_gradients(model)
    torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    with projectors.projected_update(model) if projectors is not None else nullcontext():
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def second_phase(base, train_cfg, corpora, sampler_seed: int, eval_every: int, evaluate, projectors=None) -> list:
    """Train a copy of `base` on the second corpus; returns [step, {corpus: val loss}] at every evaluation."""
    from synaptorch.train.trainer import BatchSampler, learning_rate, make_optimizer

    model = copy.deepcopy(base)
    optimizer = make_optimizer(model, train_cfg)
    sampler = BatchSampler(corpora[SECOND].split("train"), train_cfg.block_size, train_cfg.batch_size, sampler_seed)
    curve = [(0, evaluate(model))]
    for step in range(train_cfg.max_steps):
        x, y = sampler.next()
        phase_step(model, optimizer, x, y, learning_rate(step, train_cfg), train_cfg.grad_clip, projectors)
        if (step + 1) % eval_every == 0 or step + 1 == train_cfg.max_steps:
            curve.append((step + 1, evaluate(model)))
    return curve


def at_level(curve: list, level: float) -> dict:
    """Where a curve's second-corpus loss first reaches `level`: the step and both losses, linearly interpolated."""
    for (s0, l0), (s1, l1) in itertools.pairwise(curve):
        if l1[SECOND] <= level + 1e-9:
            drop = l0[SECOND] - l1[SECOND]
            t = min(1.0, max(0.0, (l0[SECOND] - level) / drop)) if drop > 0 else 1.0
            return {
                "step": round(s0 + t * (s1 - s0), 1),
                FIRST: l0[FIRST] + t * (l1[FIRST] - l0[FIRST]),
                SECOND: l0[SECOND] + t * (l1[SECOND] - l0[SECOND]),
            }
    return {"step": curve[-1][0], **curve[-1][1]}


def optimum_energy(model, batches, ranks: dict[str, int]) -> dict[str, float]:
    """The most energy any subspace of each map's rank could hold of those inputs: its top eigenvalues' share."""
    from synaptorch.continual.bdh import map_inputs

    moments = {}
    for idx in batches:
        for name, x in map_inputs(model, idx).items():
            moments[name] = moments.get(name, 0) + x.T.double() @ x.double()
    best = {}
    for name, moment in moments.items():
        eigenvalues = torch.linalg.eigvalsh(moment).flip(0)
        best[name] = float(eigenvalues[: ranks[name]].sum() / eigenvalues.sum())
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base-steps", type=int, default=400)
    parser.add_argument("--steps", type=int, default=200, help="steps on the second corpus, per method")
    parser.add_argument("--eval-every", type=int, default=50)
    parser.add_argument("--eval-tokens", type=int, default=16384, help="validation tokens per corpus and evaluation")
    parser.add_argument("--tune-lr", type=float, default=1e-3, help="peak learning rate of the second phase")
    parser.add_argument("--ranks", type=int, nargs=3, default=(64, 64, 256), metavar=("DX", "DY", "E"))
    parser.add_argument("--oja-lr", type=float, nargs=3, default=(0.1, 0.1, 0.4), metavar=("DX", "DY", "E"))
    parser.add_argument("--oja-batches", type=int, default=40, help="pydoc training batches Oja's rule learns from")
    parser.add_argument("--energy-batches", type=int, default=4, help="validation batches the energies are measured on")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--base", help="start from this pydoc checkpoint instead of training one")
    parser.add_argument("--out", help="keep the base run here; default: a temporary folder")
    parser.add_argument("--quick", action="store_true", help="a smoke run: a few steps, few validation tokens")
    args = parser.parse_args()
    if args.quick:
        args.base_steps, args.steps, args.eval_every = 20, 20, 10
        args.eval_tokens, args.oja_batches, args.energy_batches = 2048, 3, 1
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    from synaptorch.checkpoint import load_model
    from synaptorch.continual.bdh import BDHProjectors
    from synaptorch.data.corpus import load_corpus
    from synaptorch.data.tokenizer import ByteTokenizer
    from synaptorch.train.config import build_run_config
    from synaptorch.train.trainer import BatchSampler, evaluate_loss

    start = time.perf_counter()
    tokenizer = ByteTokenizer()
    corpora = {FIRST: load_corpus(FIRST, tokenizer), SECOND: load_corpus(str(SHAKESPEARE), tokenizer)}
    tune = {"lr": args.tune_lr, "min_lr": args.tune_lr / 10, "max_steps": args.steps, "warmup_steps": 10}
    train_cfg = build_run_config("cpu-tiny", train_overrides=tune).train
    block, batch = train_cfg.block_size, train_cfg.batch_size
    device = torch.device("cpu")

    def evaluate(model) -> dict[str, float]:
        model.eval()
        with torch.no_grad():
            return {
                name: evaluate_loss(model, corpus.split("val"), block, batch, device, args.eval_tokens)[0]
                for name, corpus in corpora.items()
            }

    with tempfile.TemporaryDirectory() as tmp:
        if args.base:
            checkpoint = Path(args.base)
        else:
            checkpoint = train(
                Path(args.out or tmp) / "base", args.base_steps, data=FIRST, eval_tokens=args.eval_tokens
            )
        base = load_model(checkpoint)
    base_seconds = time.perf_counter() - start

    start = time.perf_counter()
    ranks = dict(zip(MAPS, args.ranks, strict=True))
    projectors = BDHProjectors(
        base, ranks, dict(zip(MAPS, args.oja_lr, strict=True)), generator=torch.Generator().manual_seed(args.seed)
    )
    oja_sampler = BatchSampler(corpora[FIRST].split("train"), block, batch, args.seed + 1)
    projectors.learn(base, (oja_sampler.next()[0] for _ in range(args.oja_batches)))
    held_out = {
        name: [BatchSampler(c.split("val"), block, batch, args.seed + 2).next()[0] for _ in range(args.energy_batches)]
        for name, c in corpora.items()
    }
    energies = {name: projectors.energy(base, batches) for name, batches in held_out.items()}
    best = optimum_energy(base, held_out[FIRST], ranks)
    oja_seconds = time.perf_counter() - start

    start = time.perf_counter()
    curves = {
        "finetune": second_phase(base, train_cfg, corpora, args.seed + 3, args.eval_every, evaluate),
        "hlop": second_phase(base, train_cfg, corpora, args.seed + 3, args.eval_every, evaluate, projectors),
    }
    phase_seconds = time.perf_counter() - start

    before = curves["finetune"][0][1]
    level = max(curve[-1][1][SECOND] for curve in curves.values())
    matched = {method: at_level(curve, level) for method, curve in curves.items()}
    methods = {}
    for method, curve in curves.items():
        after = curve[-1][1]
        methods[method] = {
            "before": {k: round(v, 4) for k, v in before.items()},
            "after": {k: round(v, 4) for k, v in after.items()},
            f"{FIRST}_rise": round(after[FIRST] - before[FIRST], 4),
            f"at_equal_{SECOND}": {k: round(v, 4) for k, v in matched[method].items()},
            f"{FIRST}_rise_at_equal_{SECOND}": round(matched[method][FIRST] - before[FIRST], 4),
            "curve": [{"step": s, **{k: round(v, 4) for k, v in losses.items()}} for s, losses in curve],
        }
    rise_ft = methods["finetune"][f"{FIRST}_rise_at_equal_{SECOND}"]
    rise_hlop = methods["hlop"][f"{FIRST}_rise_at_equal_{SECOND}"]
    gap = curves["hlop"][-1][1][SECOND] - curves["finetune"][-1][1][SECOND]
    # Undefined when fine-tuning did not forget: nothing to halve.
    ratio = rise_hlop / rise_ft if rise_ft > 0 else None
    ratio_met = ratio is not None and ratio <= RISE_RATIO
    shown = "undefined" if ratio is None else f"{ratio:.2f}"

    print(f"val loss, nats per byte ({args.eval_tokens} tokens per corpus); base {FIRST}: {before[FIRST]:.4f}")
    print(
        f"{'method':10} {FIRST + ' before':>14} {FIRST + ' after':>13} {SECOND + ' before':>19} {SECOND + ' after':>18}"
    )
    for method, m in methods.items():
        b, a = m["before"], m["after"]
        print(f"{method:10} {b[FIRST]:14.4f} {a[FIRST]:13.4f} {b[SECOND]:19.4f} {a[SECOND]:18.4f}")
    print(f"at {SECOND} loss {level:.4f}: {FIRST} rise FT {rise_ft:+.4f}, HLOP {rise_hlop:+.4f}, ratio {shown}")
    print(f"final {SECOND} gap HLOP - fine-tuning {gap:+.4f}; subspaces {projectors.sizes()}")
    print(f"energy on {FIRST} val {energies[FIRST]}, optimum {best}; on {SECOND} val {energies[SECOND]}")

    emit(
        "continual_lm",
        {
            "steps": {"base": args.base or args.base_steps, "second": args.steps, "eval_every": args.eval_every},
            "quick": args.quick,
            "tune_lr": args.tune_lr,
            "eval_tokens": args.eval_tokens,
            "val_loss_nats_per_byte": methods,
            f"equal_{SECOND}_level": round(level, 4),
            f"{SECOND}_gap_final": round(gap, 4),
            "rise_ratio_hlop_over_finetune": None if ratio is None else round(ratio, 4),
            "subspace": {
                "sizes": projectors.sizes(),
                "oja_lr": dict(zip(MAPS, args.oja_lr, strict=True)),
                "oja_batches": args.oja_batches,
                f"energy_{FIRST}_val": {k: round(v, 4) for k, v in energies[FIRST].items()},
                f"energy_{FIRST}_val_optimum": {k: round(v, 4) for k, v in best.items()},
                f"energy_{SECOND}_val": {k: round(v, 4) for k, v in energies[SECOND].items()},
                "projection_error": {k: round(v, 4) for k, v in projectors.projection_errors().items()},
            },
            "target": {
                "rise_ratio_at_most": RISE_RATIO,
                f"{SECOND}_within": WITHIN,
                "ratio_met": ratio_met,
                "within_met": abs(gap) <= WITHIN,
            },
            "target_met": ratio_met and abs(gap) <= WITHIN,
            "seconds": {
                "base": round(base_seconds, 1),
                "oja": round(oja_seconds, 1),
                "second_phase": round(phase_seconds, 1),
            },
        },
    )


if __name__ == "__main__":
    main()
