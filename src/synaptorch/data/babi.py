"""The bAbI question-answering tasks (Weston et al. 2015, v1.2): reader, vocabulary and tensors.

File format, one line per sentence, numbered from 1 within a story (an ID of 1 starts the next):

    1 Mary moved to the bathroom.
    2 John went to the hallway.
    3 Where is Mary? <TAB>bathroom<TAB>1

A question line is `ID question<TAB>answer<TAB>supporting IDs`. Some published files put a
space before the first tab; it is stripped. Answers of tasks 8 and 19 are comma-joined lists
(`apple,football`, `n,w`) and stay one answer token, as does `nothing`. Questions are not
statements: a question sees every statement before it in its story, and IDs are kept as the
file numbers them, so supporting IDs name story lines directly.

Text is lower-cased and cut into words and punctuation marks; the final "." or "?" is dropped.

Sources: a single file, a list of files, a folder of `qa{N}_{name}_{train,test}.txt` files (of
one task or many), or the published tree `tasks_1-20_v1-2/en/` (1k) and `.../en-10k/` (10k) or
its parent. The task number comes from the file name when it follows that pattern.

Tensors follow the memory-network convention of the H-Mem reference (Limbacher and Legenstein
2020, after Sukhbaatar et al. 2015): stories [B, sentences, words], questions [B, words],
answers [B], 0 the padding index, the most recent sentences kept. With time words, sentence i
(0 the oldest) of the L kept gets index len(vocabulary) + L - 1 - i in its last word slot: the
newest sentence the smallest, which is the reference's |V| + L - i with |V| its largest word index.
The validation split is the last 10% of the training samples, as the reference's Keras
`validation_split` takes it.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from synaptorch.errors import ConfigError, DataError

TASK_NAMES = {
    1: "single-supporting-fact",
    2: "two-supporting-facts",
    3: "three-supporting-facts",
    4: "two-arg-relations",
    5: "three-arg-relations",
    6: "yes-no-questions",
    7: "counting",
    8: "lists-sets",
    9: "simple-negation",
    10: "indefinite-knowledge",
    11: "basic-coreference",
    12: "conjunction",
    13: "compound-coreference",
    14: "time-reasoning",
    15: "basic-deduction",
    16: "basic-induction",
    17: "positional-reasoning",
    18: "size-reasoning",
    19: "path-finding",
    20: "agents-motivations",
}
SPLITS = ("train", "test")
SIZE_FOLDERS = {"1k": "en", "10k": "en-10k"}  # the published tree's folder of each training-set size
TREE_FOLDER = "tasks_1-20_v1-2"
MEMORY_SENTENCES = 50  # the memory size of Sukhbaatar et al. 2015
VALIDATION_FRACTION = 0.1
TASK_FILE = re.compile(r"qa(\d+)_[^/]*_(train|test)\.txt")
TOKEN = re.compile(r"\w+|[^\w\s]+")


def task_file_name(task: int, split: str) -> str:
    """The published file name of a task's split, e.g. `qa1_single-supporting-fact_train.txt`."""
    if task not in TASK_NAMES:
        raise ConfigError(f"unknown bAbI task {task}; the tasks are 1 to 20")
    if split not in SPLITS:
        raise ConfigError(f"unknown split {split!r}; choose train or test")
    return f"qa{task}_{TASK_NAMES[task]}_{split}.txt"


def tokenize(text: str) -> tuple[str, ...]:
    """Lower-cased words and punctuation marks, without the final "." or "?"."""
    tokens = TOKEN.findall(text.lower())
    if tokens and tokens[-1] in (".", "?"):
        tokens.pop()
    return tuple(tokens)


@dataclass(frozen=True)
class BabiSample:
    """One question and the statements of its story that come before it."""

    story: tuple[tuple[str, ...], ...]  # the statements, oldest first, each a tuple of words
    story_ids: tuple[int, ...]  # their line IDs in the file
    question: tuple[str, ...]
    answer: str  # one token, even when it lists several things ("apple,football")
    supporting_ids: tuple[int, ...]  # line IDs of the statements that answer it, in the file's order
    question_id: int
    task: int | None = None  # from the file name, when it has the published pattern
    source: str = ""  # "file:line" of the question, for messages


def task_of_file(path: str | Path) -> int | None:
    """The task number in a published file name, None for any other name."""
    match = TASK_FILE.fullmatch(Path(path).name)
    return int(match.group(1)) if match else None


def parse_babi(text: str, source: str = "<text>", task: int | None = None) -> list[BabiSample]:
    """The questions of bAbI-formatted text; a malformed line is a DataError naming `source` and the line."""
    samples = []
    story: list[tuple[str, ...]] = []
    ids: list[int] = []
    previous_id = 0
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line:
            continue
        where = f"{source}:{number}"
        head, _, rest = line.partition(" ")
        if not head.isdigit() or not rest.strip():
            raise DataError(f"{where}: expected 'ID text', got {line[:60]!r}")
        line_id = int(head)
        if line_id == 1:
            story, ids = [], []
        elif previous_id == 0:
            raise DataError(f"{where}: the first story starts at ID {line_id}, not 1")
        elif line_id != previous_id + 1:
            raise DataError(f"{where}: ID {line_id} follows {previous_id}; a story counts up from 1")
        previous_id = line_id
        if "\t" not in rest:
            story.append(tokenize(rest))
            ids.append(line_id)
            continue
        fields = rest.rstrip().split("\t")
        if len(fields) > 3:
            raise DataError(f"{where}: a question line has 3 tab-separated fields, this one {len(fields)}")
        question, answer = tokenize(fields[0]), fields[1].strip() if len(fields) > 1 else ""
        if not question or not answer:
            raise DataError(f"{where}: a question needs its text and an answer")
        support = _supporting_ids(fields[2] if len(fields) == 3 else "", set(ids), where)
        samples.append(BabiSample(tuple(story), tuple(ids), question, answer, support, line_id, task, where))
    return samples


def _supporting_ids(field: str, statements: set[int], where: str) -> tuple[int, ...]:
    support = []
    for token in field.split():
        if not token.isdigit():
            raise DataError(f"{where}: supporting ID {token!r} is not a number")
        if int(token) not in statements:
            raise DataError(f"{where}: supporting ID {token} is not a statement before this question")
        support.append(int(token))
    return tuple(support)


def read_babi_file(path: str | Path, task: int | None = None) -> list[BabiSample]:
    """The questions of one file; `task` defaults to the number in a published file name."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(f"{path} not found") from None
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    samples = parse_babi(text, str(path), task if task is not None else task_of_file(path))
    if not samples:
        raise DataError(f"{path}: no questions")
    return samples


def babi_files(
    source: str | Path, split: str = "train", tasks: Iterable[int] | None = None, size: str = "1k"
) -> list[Path]:
    """The files a source names: itself if a file; in a folder (or the published tree, for the
    `size`'s subfolder), the `split`'s files of `tasks` (all if None), in task order."""
    if split not in SPLITS:
        raise ConfigError(f"unknown split {split!r}; choose train or test")
    if size not in SIZE_FOLDERS:
        raise ConfigError(f"unknown bAbI size {size!r}; choose 1k or 10k")
    folder = Path(source)
    if folder.is_file():
        return [folder]
    if not folder.is_dir():
        raise DataError(f"{folder} not found")
    if (folder / TREE_FOLDER).is_dir():
        folder = folder / TREE_FOLDER
    if (folder / SIZE_FOLDERS[size]).is_dir():
        folder = folder / SIZE_FOLDERS[size]
    found = {}
    for path in folder.iterdir():
        match = TASK_FILE.fullmatch(path.name)
        if match and match.group(2) == split and path.is_file():
            found[int(match.group(1))] = path
    wanted = sorted(found) if tasks is None else sorted(set(tasks))
    if not found:
        raise DataError(f"no bAbI {split} files (qa{{N}}_{{name}}_{split}.txt) in {folder}")
    missing = [task for task in wanted if task not in found]
    if missing:
        raise DataError(f"no bAbI {split} file of task {', '.join(map(str, missing))} in {folder}")
    return [found[task] for task in wanted]


def load_babi(
    source: str | Path | Sequence[str | Path],
    split: str = "train",
    tasks: Iterable[int] | None = None,
    size: str = "1k",
) -> list[BabiSample]:
    """The questions of a file, a list of files, a folder or the published tree (see `babi_files`)."""
    sources = [source] if isinstance(source, str | Path) else list(source)
    tasks = None if tasks is None else list(tasks)
    return [
        sample for one in sources for path in babi_files(one, split, tasks, size) for sample in read_babi_file(path)
    ]


def split_validation(
    samples: Sequence[BabiSample], fraction: float = VALIDATION_FRACTION
) -> tuple[list[BabiSample], list[BabiSample]]:
    """(train, validation): the last `fraction` of the samples validate, as Keras's
    `validation_split` does in the H-Mem reference. Nothing is shuffled, so the split depends
    only on the samples' order; a story may straddle it."""
    if not 0 <= fraction < 1:
        raise ConfigError(f"validation fraction {fraction} must be in [0, 1)")
    cut = int(len(samples) * (1 - fraction))
    return list(samples[:cut]), list(samples[cut:])


class Vocabulary:
    """Words to indices: 0 is padding, 1 the unknown word, then the words in sorted order."""

    PAD = "<pad>"
    UNKNOWN = "<unk>"

    def __init__(self, words: Iterable[str]) -> None:
        self.words = [self.PAD, self.UNKNOWN, *sorted(set(words) - {self.PAD, self.UNKNOWN})]
        self._index = {word: i for i, word in enumerate(self.words)}

    @classmethod
    def from_samples(cls, samples: Iterable[BabiSample]) -> Vocabulary:
        """Every word of the stories and questions, and every answer as one token."""
        words: set[str] = set()
        for sample in samples:
            for sentence in sample.story:
                words.update(sentence)
            words.update(sample.question)
            words.add(sample.answer)
        return cls(words)

    def __len__(self) -> int:
        return len(self.words)

    def __contains__(self, word: str) -> bool:
        return word in self._index

    def index(self, word: str, unknown: Counter[str] | None = None) -> int:
        """The word's index; a missing word is the unknown one, and is counted in `unknown`."""
        found = self._index.get(word)
        if found is not None:
            return found
        if unknown is not None:
            unknown[word] += 1
        return 1

    def encode(self, words: Iterable[str], unknown: Counter[str] | None = None) -> list[int]:
        return [self.index(word, unknown) for word in words]


@dataclass(frozen=True)
class BabiLayout:
    """The tensor sizes: memory rows (the most recent sentences kept) and word slots per row."""

    n_sentences: int
    n_words: int  # slots of a sentence and of a question; with time words a sentence's last slot is its time word
    time_words: bool = True

    @classmethod
    def fit(
        cls, *sample_sets: Iterable[BabiSample], max_sentences: int = MEMORY_SENTENCES, time_words: bool = True
    ) -> BabiLayout:
        """The smallest layout that holds every sample given: as in the reference, the longest
        story (up to `max_sentences`), and the longest sentence (+ 1 for its time word) or question."""
        if max_sentences < 1:
            raise ConfigError(f"max_sentences {max_sentences} must be at least 1")
        longest_story, longest_sentence, longest_question = 1, 1, 1
        for samples in sample_sets:
            for sample in samples:
                longest_story = max(longest_story, len(sample.story))
                longest_sentence = max([longest_sentence, *map(len, sample.story)])
                longest_question = max(longest_question, len(sample.question))
        words = max(longest_sentence + int(time_words), longest_question)
        return cls(min(longest_story, max_sentences), words, time_words)


@dataclass(frozen=True)
class EncodedBabi:
    """Samples as padded index tensors (int64)."""

    stories: torch.Tensor  # [B, n_sentences, n_words]
    questions: torch.Tensor  # [B, n_words]
    answers: torch.Tensor  # [B]
    tasks: torch.Tensor  # [B], 0 where the task is unknown
    layout: BabiLayout
    n_embeddings: int  # the vocabulary and, with time words, one index per memory row
    unknown_words: Counter[str]  # words (answers included) missing from the vocabulary: occurrences

    @property
    def n_unknown(self) -> int:
        return sum(self.unknown_words.values())


def encode_samples(
    samples: Sequence[BabiSample], vocabulary: Vocabulary, layout: BabiLayout | None = None
) -> EncodedBabi:
    """Index tensors of the samples; `layout` defaults to the one that fits them. Fit it on the
    training and test samples together to encode both alike."""
    layout = layout or BabiLayout.fit(samples)
    width = layout.n_words - int(layout.time_words)
    unknown: Counter[str] = Counter()
    stories, questions = [], []
    for sample in samples:
        kept = sample.story[-layout.n_sentences :]
        rows = []
        for i, sentence in enumerate(kept):
            if len(sentence) > width:
                raise DataError(f"{sample.source}: a sentence of {len(sentence)} words does not fit {width} slots")
            row = vocabulary.encode(sentence, unknown) + [0] * (layout.n_words - len(sentence))
            if layout.time_words:
                row[-1] = len(vocabulary) + len(kept) - 1 - i
            rows.append(row)
        rows += [[0] * layout.n_words] * (layout.n_sentences - len(kept))
        stories.append(rows)
        if len(sample.question) > layout.n_words:
            raise DataError(
                f"{sample.source}: a question of {len(sample.question)} words does not fit {layout.n_words} slots"
            )
        questions.append(vocabulary.encode(sample.question, unknown) + [0] * (layout.n_words - len(sample.question)))
    answers = [vocabulary.index(sample.answer, unknown) for sample in samples]
    shape = (len(samples), layout.n_sentences, layout.n_words)
    return EncodedBabi(
        stories=torch.tensor(stories, dtype=torch.long).reshape(shape),
        questions=torch.tensor(questions, dtype=torch.long).reshape(len(samples), layout.n_words),
        answers=torch.tensor(answers, dtype=torch.long),
        tasks=torch.tensor([sample.task or 0 for sample in samples], dtype=torch.long),
        layout=layout,
        n_embeddings=len(vocabulary) + (layout.n_sentences if layout.time_words else 0),
        unknown_words=unknown,
    )
