"""Knowledge distillation: a student language model trained on the data and on a teacher's distributions.

The loss of a position with data target y, student logits z and teacher log-probs t is

    alpha * CE(z, y) + (1 - alpha) * tau^2 * KL(p_teacher^tau || p_student^tau)

with p^tau = softmax(logits / tau). The tau^2 factor (Hinton et al., 2015) keeps the gradient of
the KL term on the scale of the cross-entropy's as tau changes, since softening by tau shrinks
that gradient by about 1 / tau^2.

With a top-k teacher (a cache, or `top_k` >= 1) only the teacher's k most likely ids are kept: its
tempered distribution is softmax(t / tau) renormalised over those k ids (log-probs stored at
temperature 1 divided by tau and renormalised, which equals tempering the full distribution and
then keeping the k ids), and the student side is its full-vocabulary log-softmax(z / tau)
gathered at the same ids. Then sum_k p_k (log p_k - log q_k) >= -log(sum_k q_k) >= 0: the term is
zero only when the student puts all its mass on the k ids in the teacher's proportions.

Evaluation reports the student's loss on the data and KL(teacher || student) at tau = 1 on the
validation windows, over the same k ids when the teacher is top-k.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch.nn.functional as F
from torch import Tensor

from synaptorch.checkpoint import read_meta
from synaptorch.data.corpus import Corpus, load_corpus
from synaptorch.data.tokenizer import load_tokenizer
from synaptorch.errors import ConfigError, DataError
from synaptorch.fields import setting
from synaptorch.io import FolderLock, check_folder_path
from synaptorch.train.config import RunConfig, RunRequest, TrainConfig
from synaptorch.train.teacher import LiveSignal, Teacher, TeacherCache, TeacherSignal
from synaptorch.train.trainer import Trainer, bits_per_byte, eval_batches, released_on_error

DEFAULT_CACHE_TOP_K = 64


@dataclass(frozen=True)
class DistillConfig:
    alpha: float = setting(0.5, "Weight of the data's cross-entropy (1: data alone); 1 - alpha goes to the teacher.")
    tau: float = setting(1.0, "Temperature of both distributions in the KL term (scaled by tau^2).")
    # None resolves to 64 with a cache and to every id without (`for_signal`).
    top_k: int | None = setting(None, "Teacher ids kept per position, 0 for all.  [default: 64 with --cache, else all]")
    context: int = setting(256, "Teacher window while filling the cache.")

    def __post_init__(self) -> None:
        if not 0.0 <= self.alpha <= 1.0:
            raise ConfigError(f"alpha must be in [0, 1], got {self.alpha}")
        if not (math.isfinite(self.tau) and self.tau > 0):
            raise ConfigError(f"tau must be a positive number, got {self.tau}")
        if self.top_k is not None and self.top_k < 0:
            raise ConfigError(f"top-k must be >= 0, got {self.top_k}")
        if self.context < 2:
            raise ConfigError(f"the teacher's context must be at least 2 tokens, got {self.context}")

    def to_dict(self) -> dict:
        return asdict(self)

    def for_signal(self, cached: bool) -> DistillConfig:
        """These settings with top_k set for a cached teacher signal or a live one."""
        if self.top_k is None:
            return replace(self, top_k=DEFAULT_CACHE_TOP_K if cached else 0)
        if cached and self.top_k == 0:
            raise ConfigError("a teacher cache keeps the top k ids; top-k 0 (every id) needs the teacher run live")
        return self


def open_teacher_cache(
    folder: str | Path, teacher: Teacher, corpus: Corpus, distill: DistillConfig, progress: bool = False
) -> tuple[TeacherCache, bool]:
    """The teacher's cache of `corpus` in `folder` for these settings, filled first if the folder does
    not exist; and whether it was filled now. A cache made otherwise is refused as stale."""
    check_folder_path(folder, "--cache")
    distill = distill.for_signal(cached=True)
    expected = TeacherCache.expected_header(teacher, corpus.sha256, len(corpus.tokens), distill.top_k, distill.context)
    return TeacherCache.open_or_build(folder, teacher, corpus.tokens, expected, progress=progress)


def check_precompute(cache: str | Path | None, resume: bool) -> None:
    """Refuse a precomputation that could not fill a cache, before the teacher is loaded."""
    if cache is None:
        raise ConfigError("--precompute-only needs --cache")
    if resume:
        raise ConfigError("--precompute-only fills a cache and trains nothing; it does not go with --resume")


def precompute_teacher_cache(
    folder: str | Path, teacher: Teacher, train: TrainConfig, distill: DistillConfig, progress: bool = False
) -> dict:
    """Fill (or check) the teacher's cache of the corpus of `train`; a record of the cache's header."""
    check_student_tokenizer(teacher, train.tokenizer)
    corpus = load_corpus(train.data, teacher.tokenizer, train.val_fraction)
    opened, filled = open_teacher_cache(folder, teacher, corpus, distill, progress=progress)
    header = {k: v for k, v in opened.header.items() if k != "teacher_name"}
    return {"cache": str(folder), "filled": filled, **header}


def teacher_kl(
    student_logits: Tensor, teacher_ids: Tensor | None, teacher_logprobs: Tensor, tau: float = 1.0
) -> Tensor:
    """Mean over positions of KL(p_teacher^tau || p_student^tau); top-k when `teacher_ids` is given.

    student_logits (..., V); teacher_ids (..., k) or None; teacher_logprobs (..., k) or (..., V).
    """
    return _kl(F.log_softmax(student_logits.float() / tau, dim=-1), teacher_ids, teacher_logprobs, tau)


def _kl(student: Tensor, teacher_ids: Tensor | None, teacher_logprobs: Tensor, tau: float) -> Tensor:
    if teacher_ids is not None:
        student = student.gather(-1, teacher_ids)
    teacher = F.log_softmax(teacher_logprobs.float() / tau, dim=-1)
    return (teacher.exp() * (teacher - student)).sum(-1).mean()


def distillation_loss(
    student_logits: Tensor,
    targets: Tensor,
    teacher_ids: Tensor | None,
    teacher_logprobs: Tensor,
    alpha: float,
    tau: float,
) -> tuple[Tensor, Tensor, Tensor]:
    """alpha * CE(student, data) + (1 - alpha) * tau^2 * KL(teacher^tau || student^tau); and CE and KL apart."""
    student = F.log_softmax(student_logits.float(), dim=-1)
    ce = F.nll_loss(student.flatten(0, -2), targets.flatten())
    # At tau = 1 both terms read the same log-softmax, which over a large vocabulary is most of
    # the cost of the loss.
    tempered = student if tau == 1 else F.log_softmax(student_logits.float() / tau, dim=-1)
    kl = _kl(tempered, teacher_ids, teacher_logprobs, tau)
    return alpha * ce + (1 - alpha) * tau**2 * kl, ce, kl


def check_student_tokenizer(teacher: Teacher, spec: str) -> None:
    """Refuse a student tokenizer other than the teacher's: the two distributions must share ids."""
    student = load_tokenizer(spec)
    if student.identity() == teacher.tokenizer.identity():
        return
    if student.name == "bytes":
        raise DataError(
            f"a byte-level student cannot learn from teacher {teacher.name}, whose tokenizer is "
            f"{teacher.tokenizer.name} ({teacher.tokenizer.vocab_size} ids); leave --tokenizer out to use the teacher's"
        )
    raise DataError(f"the student's tokenizer {spec} is not the one of teacher {teacher.name}; leave --tokenizer out")


class DistillTrainer(Trainer):
    """The trainer with the teacher's distributions as a second target.

    The teacher signal comes from `cache` (a TeacherCache folder, filled first if it does not
    exist) or, without one, from running the teacher on each batch. Checkpoints record the
    distillation settings and the teacher's identity; a resume uses the saved settings and
    refuses another teacher.
    """

    owned_entry = "distill"

    def __init__(
        self,
        run: RunConfig,
        out: str | Path,
        teacher: Teacher,
        distill: DistillConfig | None = None,
        cache: str | Path | None = None,
        progress: bool = True,
        resume_from: Path | None = None,
        lock: FolderLock | None = None,
    ) -> None:
        with released_on_error(lock):
            distill = (distill or DistillConfig()).for_signal(cached=cache is not None)
            if resume_from is None:
                check_student_tokenizer(teacher, run.train.tokenizer)
            if distill.top_k > teacher.tokenizer.vocab_size:
                vocab = teacher.tokenizer.vocab_size
                raise ConfigError(f"top-k {distill.top_k} is more than the teacher's {vocab} ids")
        self.teacher, self.distill = teacher, distill
        self.cache = None if cache is None else str(Path(cache).resolve())
        super().__init__(run, out, progress=progress, resume_from=resume_from, lock=lock)

    def check_inputs(self) -> None:
        """The teacher signal: a stale cache or another tokenizer is refused before the run folder is made."""
        if self.tokenizer.identity() != self.teacher.tokenizer.identity():
            raise DataError(f"the checkpoint in {self.out} does not use the tokenizer of teacher {self.teacher.name}")
        self.signal: TeacherSignal
        if self.cache is None:
            self.signal = LiveSignal(self.teacher, self.corpus.tokens, self.distill.top_k)
        else:
            for turn in (True, False):  # the main process fills a missing cache; the others then read it
                if self.world.is_main == turn:
                    self.signal, _ = open_teacher_cache(
                        self.cache, self.teacher, self.corpus, self.distill, self.progress
                    )
                self.world.barrier()

    @classmethod
    def resume(
        cls,
        out: str | Path,
        teacher: Teacher,
        cache: str | Path | None = None,
        request: RunRequest | None = None,
        progress: bool = True,
        given: dict | None = None,
    ) -> DistillTrainer:
        """Continue a distillation run with its saved settings; another teacher is refused.

        `cache` may name a moved copy of the saved cache, whose header must match all the same.
        `given` holds distillation settings given again, which must equal the saved ones.
        """
        run, out, checkpoint, lock = cls._resumed(out, request)
        with released_on_error(lock):
            saved = read_meta(checkpoint).get("distill")
            if saved is None:
                raise ConfigError(f"{out} holds a run trained without a teacher; resume it with `train`")
            if saved["teacher"] != teacher.identity:
                raise ConfigError(f"{out} was distilled from another teacher ({saved['teacher_name']})")
            if cache is not None and saved["cache"] is None:
                raise ConfigError(f"{out} was distilled with the teacher run on each batch; resume it without --cache")
            distill = DistillConfig(**saved["config"])
            for name, value in (given or {}).items():
                if getattr(distill, name) != value:
                    flag = f"--{name.replace('_', '-')}"
                    saved_value = getattr(distill, name)
                    raise ConfigError(f"{flag} cannot change on resume: the run was distilled with {saved_value!r}")
            cache = cache or saved["cache"]
        return cls(run, out, teacher, distill, cache, progress, resume_from=checkpoint, lock=lock)

    def loss(self, logits: Tensor, targets: Tensor, starts: list[int]) -> Tensor:
        if self.distill.alpha == 1.0:  # data alone: the teacher is only consulted for evaluations
            return super().loss(logits, targets, starts)
        ids, logprobs = self.signal.targets(starts, targets.shape[1])
        ids = None if ids is None else ids.to(self.device)
        loss, _, _ = distillation_loss(
            logits, targets, ids, logprobs.to(self.device), self.distill.alpha, self.distill.tau
        )
        return loss

    def evaluate(self, max_tokens: int | None = None) -> dict:
        """Validation loss on the data (nats per token, bpb) and KL(teacher || student) at tau = 1."""
        tokens = self.cfg.eval_tokens if max_tokens is None else max_tokens
        block, offset = self.cfg.block_size, self.corpus.split_index
        val = self.corpus.split("val")
        batch, world, precision = self.cfg.batch_size, self.world, self.precision
        batches = eval_batches(self.model, val, block, batch, self.device, tokens, world, precision)
        ce_sum, kl_sum, count = 0.0, 0.0, 0
        for starts, logits, targets in batches:
            ids, logprobs = self.signal.targets([offset + s for s in starts], block)
            ids = None if ids is None else ids.to(self.device)
            _, ce, kl = distillation_loss(logits, targets, ids, logprobs.to(self.device), 1.0, 1.0)
            n = targets.numel()
            ce_sum, kl_sum, count = ce_sum + ce.item() * n, kl_sum + kl.item() * n, count + n
        ce_sum, kl_sum, count = self.world.sum([ce_sum, kl_sum, count], self.device)
        loss = ce_sum / count
        return {"val_loss": loss, "val_bpb": bits_per_byte(loss, self.corpus), "val_kl": kl_sum / count}

    def checkpoint_meta(self) -> dict:
        return {
            "distill": {
                "config": self.distill.to_dict(),
                "teacher": self.teacher.identity,
                "teacher_name": self.teacher.name,
                "cache": self.cache,
            }
        }
