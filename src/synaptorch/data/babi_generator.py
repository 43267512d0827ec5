"""bAbI stories made offline for tasks 1, 2, 3, 6, 11, 15 and 16, and a checker that re-derives their answers.

synaptorch works offline, without the published v1.2 data (Weston et al. 2015), so these tasks
are rebuilt from the published files and the paper's examples: their world (six locations, John,
Mary, Sandra and Daniel, the apple, the football and the milk; Gertrude's animals; Lily's swans),
their sentence templates, the shape of their stories and the supporting IDs in the order the
published files list them (tasks 11 and 15: in the order of the reasoning):

    1   five blocks of two moves, each block followed by "Where is X?"; support: X's last move
    2   moves, takes and drops, "Where is the O?" after two or more of them; support: the O's
        latest take or drop, then the move that placed the one who holds (or dropped) it
    3   as 2, asking "Where was the O before the L?" about the O's carry since its latest take;
        support: the O's latest take or drop, the holder's move into L, the line placing it before
    6   as 1, asking "Is X in the L?", the answer yes half the time
    11  five blocks of "X moved to ..." and "Then he/she moved to ...", then "Where is X?";
        support: the line naming X and the line moving them
    15  "Ss are afraid of Ts." for each of 4 animals and "N is a S." for 4 names, shuffled, then
        "What is n afraid of?" for each name; support: the "is a" line, then the "afraid" line
    16  4 names with a species and a colour, a fifth with a species only one of them shares,
        then "What color is N?"; support: N's species, the other's species, the other's colour

A story is told only through what happens in a world where everyone and everything has a real
place: what its lines reveal is tracked line by line, so only questions the text answers are asked.

File names and format are the published ones (`qa1_single-supporting-fact_train.txt`, questions
as `Where is Mary?<TAB>bathroom<TAB>1`). A `1k` training set has 1,000 questions, a `10k` one
10,000, a test set 1,000; the last story is cut after the last question needed. Each split is a
random stream seeded by (task, split, seed): a seed always gives the same files, train and test
never share a stream, the 1k training set is the start of the 10k one, and the test set is the
same for both sizes.

`check_samples` reads each story as a reader would, knowing nothing of the generator's world,
derives every answer and its supporting IDs from the statements alone and reports disagreements.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from itertools import pairwise
from pathlib import Path

from synaptorch.data.babi import SPLITS, BabiSample, task_file_name
from synaptorch.errors import ConfigError
from synaptorch.io import atomic_write_text

GENERATED_TASKS = (1, 2, 3, 6, 11, 15, 16)
SIZES = {"1k": 1000, "10k": 10000}
TEST_QUESTIONS = 1000

LOCATIONS = ("bedroom", "kitchen", "garden", "hallway", "bathroom", "office")
ACTORS = ("John", "Mary", "Sandra", "Daniel")
PRONOUNS = {"John": "he", "Mary": "she", "Sandra": "she", "Daniel": "he"}
OBJECTS = ("apple", "football", "milk")
MOVES = ("went to", "journeyed to", "travelled to", "moved to", "went back to")
TAKES = ("got", "grabbed", "picked up", "took")
DROPS = ("dropped", "put down", "discarded", "left")
LINKERS = ("Then", "After that", "Following that", "Afterwards")
PLURALS = {"mouse": "mice", "sheep": "sheep", "wolf": "wolves", "cat": "cats"}
DEDUCTION_NAMES = ("Gertrude", "Winona", "Jessica", "Emily")
SPECIES = ("swan", "lion", "frog", "rhino")
COLOURS = ("gray", "white", "yellow", "green")
INDUCTION_NAMES = ("Lily", "Bernhard", "Greg", "Julius", "Brian")

BLOCKS = 5  # questions in a story of tasks 1, 2, 3, 6 and 11
MIN_GAP = 2  # statements between two questions of tasks 2 and 3, at least
ASK = {2: 0.5, 3: 0.3}  # chance of a question once one is possible; task 3's stories run longer
THERE = {2: (1.0, 0.0), 3: (0.2, 0.4)}  # how often a take, and a drop, ends in "there"
TAKE, DROP = 0.25, 0.15  # chance that a step is a take, or a drop, when one is possible
MAX_STATEMENTS = 500  # a task 2 or 3 story ends here even short of its questions


class _Random(random.Random):
    """Python keeps only `random()` the same from one version to the next: choosing and shuffling
    with it alone keeps a seed's files the same under every Python."""

    def choice(self, seq: Sequence):
        return seq[int(self.random() * len(seq))]

    def shuffle(self, x: list) -> None:
        for i in range(len(x) - 1, 0, -1):
            j = int(self.random() * (i + 1))
            x[i], x[j] = x[j], x[i]


class _Story:
    """The lines of one story: statements, and questions with their answer and supporting IDs."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, str | None, tuple[int, ...]]] = []
        self.questions = 0

    def say(self, text: str) -> int:
        self.lines.append((text, None, ()))
        return len(self.lines)

    def ask(self, text: str, answer: str, support: tuple[int, ...]) -> None:
        self.lines.append((text, answer, support))
        self.questions += 1

    def cut(self, questions: int) -> _Story:
        """The story up to its `questions`-th question."""
        asked = [i for i, (_, answer, _) in enumerate(self.lines) if answer is not None]
        self.lines = self.lines[: asked[questions - 1] + 1] if questions else []
        self.questions = questions
        return self

    def text(self) -> str:
        return "".join(
            f"{i} {text}\n" if answer is None else f"{i} {text}\t{answer}\t{' '.join(map(str, support))}\n"
            for i, (text, answer, support) in enumerate(self.lines, 1)
        )


def _elsewhere(rng: random.Random, place: str | None) -> str:
    return rng.choice([p for p in LOCATIONS if p != place])


def _single_fact(rng: random.Random, yes_no: bool) -> _Story:
    """Tasks 1 and 6."""
    story = _Story()
    known: dict[str, tuple[str, tuple[int, ...]]] = {}  # actor -> (location, the line telling it)
    for _ in range(BLOCKS):
        for _ in range(2):
            actor = rng.choice(ACTORS)
            place = _elsewhere(rng, known.get(actor, (None,))[0])
            known[actor] = (place, (story.say(f"{actor} {rng.choice(MOVES)} the {place}."),))
        actor = rng.choice(sorted(known))
        place, support = known[actor]
        if yes_no:
            asked = place if rng.random() < 0.5 else _elsewhere(rng, place)
            story.ask(f"Is {actor} in the {asked}?", "yes" if asked == place else "no", support)
        else:
            story.ask(f"Where is {actor}?", place, support)
    return story


def _coreference(rng: random.Random) -> _Story:
    """Task 11: the second move of each block names its actor by a pronoun."""
    story = _Story()
    known: dict[str, tuple[str, tuple[int, ...]]] = {}
    for _ in range(BLOCKS):
        actor = rng.choice(ACTORS)
        first = _elsewhere(rng, known.get(actor, (None,))[0])
        named = story.say(f"{actor} {rng.choice(MOVES)} the {first}.")
        second = _elsewhere(rng, first)
        line = story.say(f"{rng.choice(LINKERS)} {PRONOUNS[actor]} {rng.choice(MOVES)} the {second}.")
        known[actor] = (second, (named, line))
        actor = rng.choice(sorted(known))
        story.ask(f"Where is {actor}?", *known[actor])
    return story


class _World:
    """Tasks 2 and 3: where everyone and everything really is, and which line, if any, told it."""

    def __init__(self, rng: random.Random) -> None:
        self.at = {actor: rng.choice(LOCATIONS) for actor in ACTORS}
        self.told: dict[str, int | None] = dict.fromkeys(ACTORS)  # the line of the actor's latest move
        self.lies = {thing: rng.choice(LOCATIONS) for thing in OBJECTS}  # where a thing nobody carries is
        self.holder: dict[str, str | None] = dict.fromkeys(OBJECTS)
        self.event: dict[str, int | None] = dict.fromkeys(OBJECTS)  # the line of its latest take or drop
        self.dropped_told: dict[str, int | None] = dict.fromkeys(OBJECTS)  # the line placing its dropper
        # Since its latest take: each place it was carried to, None where untold, with the line telling it.
        self.path: dict[str, list[tuple[str | None, int | None]]] = {thing: [] for thing in OBJECTS}

    def takes(self) -> list[tuple[str, str]]:
        return [
            (actor, thing)
            for thing in OBJECTS
            if self.holder[thing] is None
            for actor in ACTORS
            if self.at[actor] == self.lies[thing]
        ]

    def drops(self) -> list[tuple[str, str]]:
        return [(holder, thing) for thing, holder in self.holder.items() if holder is not None]

    def move(self, story: _Story, rng: random.Random, actor: str) -> None:
        place = _elsewhere(rng, self.at[actor])
        line = story.say(f"{actor} {rng.choice(MOVES)} the {place}.")
        self.at[actor], self.told[actor] = place, line
        for thing in OBJECTS:
            if self.holder[thing] == actor:
                self.path[thing].append((place, line))

    def take(self, story: _Story, actor: str, thing: str, verb: str, there: bool) -> None:
        line = story.say(f"{actor} {verb} the {thing}{' there' if there else ''}.")
        self.holder[thing], self.event[thing], self.dropped_told[thing] = actor, line, None
        told = self.told[actor]
        self.path[thing] = [(self.at[actor] if told is not None else None, told)]

    def drop(self, story: _Story, actor: str, thing: str, verb: str, there: bool) -> None:
        line = story.say(f"{actor} {verb} the {thing}{' there' if there else ''}.")
        self.holder[thing], self.lies[thing], self.event[thing] = None, self.at[actor], line
        self.dropped_told[thing] = self.told[actor]

    def where(self, thing: str) -> tuple[str, tuple[int, ...]] | None:
        """Where the thing is and the lines telling it, if they do."""
        holder = self.holder[thing]
        if holder is not None:
            told = self.told[holder]
            return None if told is None else (self.at[holder], (self.event[thing], told))
        told = self.dropped_told[thing]
        return None if told is None else (self.lies[thing], (self.event[thing], told))

    def before(self, thing: str) -> list[tuple[str, str, tuple[int, ...]]]:
        """(place, the place before it, support) for each place the thing was carried to once
        since its latest take, after a told one."""
        path = self.path[thing]
        places = [place for place, _ in path]
        return [
            (place, before, (self.event[thing], line, before_line))
            for (before, before_line), (place, line) in pairwise(path)
            if before is not None and places.count(place) == 1
        ]


def _carrying(rng: random.Random, task: int) -> _Story:
    """Tasks 2 and 3."""
    story, world = _Story(), _World(rng)
    take_there, drop_there = THERE[task]
    since = 0
    statements = 0
    while story.questions < BLOCKS and statements < MAX_STATEMENTS:
        step = rng.random()
        takes, drops = world.takes(), world.drops()
        if takes and step < TAKE:
            world.take(story, *rng.choice(takes), rng.choice(TAKES), rng.random() < take_there)
        elif drops and step < TAKE + DROP:
            world.drop(story, *rng.choice(drops), rng.choice(DROPS), rng.random() < drop_there)
        else:
            world.move(story, rng, rng.choice(ACTORS))
        statements += 1
        since += 1
        if task == 2:
            options = [(f"Where is the {thing}?", *found) for thing in OBJECTS if (found := world.where(thing))]
        else:
            options = [
                (f"Where was the {thing} before the {place}?", before, support)
                for thing in OBJECTS
                for place, before, support in world.before(thing)
            ]
        if options and since >= MIN_GAP and rng.random() < ASK[task]:
            story.ask(*rng.choice(options))
            since = 0
    return story.cut(story.questions)


def _deduction(rng: random.Random) -> _Story:
    """Task 15."""
    animals = list(PLURALS)
    fears = {animal: rng.choice([other for other in animals if other != animal]) for animal in animals}
    kinds = {name: rng.choice(animals) for name in DEDUCTION_NAMES}
    facts = [("fear", animal) for animal in animals] + [("kind", name) for name in DEDUCTION_NAMES]
    rng.shuffle(facts)
    story, lines = _Story(), {}
    for fact, subject in facts:
        if fact == "fear":
            text = f"{PLURALS[subject].capitalize()} are afraid of {PLURALS[fears[subject]]}."
        else:
            text = f"{subject} is a {kinds[subject]}."
        lines[subject] = story.say(text)
    asked = list(DEDUCTION_NAMES)
    rng.shuffle(asked)
    for name in asked:
        story.ask(f"What is {name.lower()} afraid of?", fears[kinds[name]], (lines[name], lines[kinds[name]]))
    return story


def _induction(rng: random.Random) -> _Story:
    """Task 16: the asked name's species has exactly one other member, so the colour is unambiguous."""
    names = list(INDUCTION_NAMES)
    rng.shuffle(names)
    query, peer, *others = names
    species = rng.choice(SPECIES)
    kinds = {query: species, peer: species} | {
        name: rng.choice([s for s in SPECIES if s != species]) for name in others
    }
    colours = {name: rng.choice(COLOURS) for name in (peer, *others)}
    facts = [("kind", name) for name in INDUCTION_NAMES] + [("colour", name) for name in colours]
    rng.shuffle(facts)
    # Each name's species comes before its colour: swap the two where the shuffle put them the other way.
    for name in colours:
        kind, colour = facts.index(("kind", name)), facts.index(("colour", name))
        if colour < kind:
            facts[kind], facts[colour] = facts[colour], facts[kind]
    story, lines = _Story(), {}
    for fact, name in facts:
        lines[fact, name] = story.say(
            f"{name} is a {kinds[name]}." if fact == "kind" else f"{name} is {colours[name]}."
        )
    support = (lines["kind", query], lines["kind", peer], lines["colour", peer])
    story.ask(f"What color is {query}?", colours[peer], support)
    return story


def _make_story(task: int, rng: random.Random) -> _Story:
    if task in (1, 6):
        return _single_fact(rng, yes_no=task == 6)
    if task == 11:
        return _coreference(rng)
    if task in (2, 3):
        return _carrying(rng, task)
    if task == 15:
        return _deduction(rng)
    return _induction(rng)


def _check_task(task: int) -> None:
    if task not in GENERATED_TASKS:
        raise ConfigError(
            f"bAbI task {task} cannot be generated; the generated tasks are {', '.join(map(str, GENERATED_TASKS))}"
        )


def generate_babi(task: int, n_questions: int, seed: int = 0, split: str = "train") -> str:
    """The text of a bAbI file of `n_questions` questions of `task`, from the stream of (task, split, seed)."""
    _check_task(task)
    if split not in SPLITS:
        raise ConfigError(f"unknown split {split!r}; choose train or test")
    if n_questions < 1:
        raise ConfigError(f"n_questions {n_questions} must be at least 1")
    rng = _Random(f"babi-v1.2/qa{task}/{split}/{seed}")
    pieces, asked = [], 0
    while asked < n_questions:
        story = _make_story(task, rng)
        if story.questions > n_questions - asked:
            story.cut(n_questions - asked)
        asked += story.questions
        pieces.append(story.text())
    return "".join(pieces)


def write_babi(task: int, size: str, seed: int, out: str | Path) -> list[Path]:
    """Write `out/qa{task}_{name}_train.txt` (1,000 or 10,000 questions) and `_test.txt` (1,000), each atomically."""
    _check_task(task)
    if size not in SIZES:
        raise ConfigError(f"unknown bAbI size {size!r}; choose {' or '.join(SIZES)}")
    written = []
    for split, n_questions in (("train", SIZES[size]), ("test", TEST_QUESTIONS)):
        path = Path(out) / task_file_name(task, split)
        atomic_write_text(path, generate_babi(task, n_questions, seed, split))
        written.append(path)
    return written


class _Unanswerable(Exception):
    """The story does not tell the answer."""


# The reader sees lower-cased words.
SINGULARS = {plural: animal for animal, plural in PLURALS.items()}
LINKER_WORDS = tuple(tuple(linker.lower().split()) for linker in LINKERS)
GENDERS = {actor.lower(): pronoun for actor, pronoun in PRONOUNS.items()}
MOVE_VERBS = frozenset(move.removesuffix(" to") for move in MOVES)


class _Reader:
    """What the statements read so far tell, each fact with the lines telling it."""

    def __init__(self) -> None:
        self.place: dict[str, tuple[str, tuple[int, ...]]] = {}  # actor -> (location, lines)
        self.previous: tuple[str, int] | None = None  # the latest statement's actor and the line naming them
        self.holder: dict[str, str | None] = {}
        self.event: dict[str, int] = {}  # thing -> the line of its latest take or drop
        self.dropped: dict[str, tuple[str, tuple[int, ...]]] = {}  # thing -> where it was put down, if told
        self.path: dict[str, list[tuple[str | None, tuple[int, ...]]]] = {}  # since its latest take
        self.kind: dict[str, tuple[str, int]] = {}  # name -> (species, line)
        self.fear: dict[str, tuple[str, int]] = {}  # species -> (the species it fears, line)
        self.colour: dict[str, tuple[str, int]] = {}  # name -> (colour, line)

    def read(self, line: int, words: tuple[str, ...]) -> str | None:
        """Take in one statement; what is wrong with it, if anything."""
        words = list(words[:-1] if words[-1:] == ("there",) else words)
        match words:
            case [plural, "are", "afraid", "of", feared] if plural in SINGULARS and feared in SINGULARS:
                self.fear[SINGULARS[plural]] = (SINGULARS[feared], line)
                return None
            case [name, "is", "a", species]:
                self.kind[name] = (species, line)
                return None
            case [name, "is", colour] if colour in COLOURS:
                self.colour[name] = (colour, line)
                return None
        subject = self._subject(line, words)
        if isinstance(subject, str):
            return subject
        actor, lines, rest = subject
        match rest:
            case [*verb, "to", "the", place] if " ".join(verb) in MOVE_VERBS and place in LOCATIONS:
                self._move(actor, place, lines)
                return None
            case [*verb, "the", thing] if " ".join(verb) in TAKES and thing in OBJECTS:
                return self._take(actor, thing, line)
            case [*verb, "the", thing] if " ".join(verb) in DROPS and thing in OBJECTS:
                return self._drop(actor, thing, line)
        return f"unrecognised statement {' '.join(words)!r}"

    def _subject(self, line: int, words: list[str]) -> tuple[str, tuple[int, ...], list[str]] | str:
        """(actor, the lines naming and moving them, the rest of the words): a pronoun after a
        linker ("Then she ...") is the actor of the statement before."""
        for linker in LINKER_WORDS:
            n = len(linker)
            if tuple(words[:n]) == linker and words[n : n + 1] in (["he"], ["she"]):
                if self.previous is None:
                    return f"{words[n]!r} refers to no one"
                actor, named = self.previous
                if GENDERS.get(actor) != words[n]:
                    return f"{words[n]!r} cannot refer to {actor}"
                return actor, (named, line), words[n + 1 :]
        if not words:
            return "an empty statement"
        self.previous = (words[0], line)
        return words[0], (line,), words[1:]

    def _move(self, actor: str, place: str, lines: tuple[int, ...]) -> None:
        self.place[actor] = (place, lines)
        for thing, holder in self.holder.items():
            if holder == actor:
                self.path[thing].append((place, lines))

    def _take(self, actor: str, thing: str, line: int) -> str | None:
        if self.holder.get(thing) is not None:
            return f"{actor} takes the {thing} that {self.holder[thing]} carries"
        here, there = self.place.get(actor), self.dropped.get(thing)
        if here and there and here[0] != there[0]:
            return f"{actor}, in the {here[0]}, takes the {thing} from the {there[0]}"
        self.holder[thing], self.event[thing] = actor, line
        self.dropped.pop(thing, None)
        self.path[thing] = [here or (None, ())]
        return None

    def _drop(self, actor: str, thing: str, line: int) -> str | None:
        if self.holder.get(thing) != actor:
            return f"{actor} drops the {thing} without carrying it"
        self.holder[thing], self.event[thing] = None, line
        if actor in self.place:
            self.dropped[thing] = self.place[actor]
        return None

    def _place_of(self, actor: str) -> tuple[str, tuple[int, ...]]:
        if actor not in self.place:
            raise _Unanswerable(f"where {actor} is is never told")
        return self.place[actor]

    def answer(self, question: tuple[str, ...]) -> tuple[str, list[tuple[int, ...]]]:
        """The answer and the supporting IDs it may have; _Unanswerable if the story does not tell."""
        match question:
            case ("where", "is", "the", thing):
                return self._where(thing)
            case ("where", "is", actor):
                place, lines = self._place_of(actor)
                return place, [lines]
            case ("is", actor, "in", "the", place):
                where, lines = self._place_of(actor)
                return "yes" if where == place else "no", [lines]
            case ("where", "was", "the", thing, "before", "the", place):
                return self._before(thing, place)
            case ("what", "is", name, "afraid", "of"):
                return self._afraid(name)
            case ("what", "color", "is", name):
                return self._colour(name)
        raise _Unanswerable("no rule answers this question")

    def _where(self, thing: str) -> tuple[str, list[tuple[int, ...]]]:
        holder = self.holder.get(thing)
        if holder is not None:
            place, lines = self._place_of(holder)
        elif thing in self.dropped:
            place, lines = self.dropped[thing]
        else:
            raise _Unanswerable(f"where the {thing} is is never told")
        return place, [(self.event[thing], *lines)]

    def _before(self, thing: str, place: str) -> tuple[str, list[tuple[int, ...]]]:
        """The place the thing was in before it was last carried into `place`, since its latest take."""
        path = self.path.get(thing, [])
        for i in range(len(path) - 1, 0, -1):
            if path[i][0] == place:
                before, lines = path[i - 1]
                if before is None:
                    break
                return before, [(self.event[thing], *path[i][1], *lines)]
        raise _Unanswerable(f"the story does not tell where the {thing} was before the {place}")

    def _afraid(self, name: str) -> tuple[str, list[tuple[int, ...]]]:
        if name not in self.kind or self.kind[name][0] not in self.fear:
            raise _Unanswerable(f"what {name} fears is never told")
        species, kind_line = self.kind[name]
        feared, fear_line = self.fear[species]
        return feared, [(kind_line, fear_line)]

    def _colour(self, name: str) -> tuple[str, list[tuple[int, ...]]]:
        if name not in self.kind:
            raise _Unanswerable(f"the species of {name} is never told")
        species, kind_line = self.kind[name]
        peers = [
            (other, line)
            for other, (kind, line) in self.kind.items()
            if other != name and kind == species and other in self.colour
        ]
        colours = {self.colour[other][0] for other, _ in peers}
        if len(colours) != 1:
            raise _Unanswerable(f"the other {species}s have {len(colours)} colours, not one")
        return colours.pop(), [(kind_line, line, self.colour[other][1]) for other, line in peers]


def check_samples(samples: Iterable[BabiSample]) -> list[str]:
    """One line for each sample whose answer or supporting IDs differ from those its story
    implies, or whose story or question cannot be read; an empty list when all agree."""
    problems = []
    for sample in samples:
        reader, problem = _Reader(), None
        for line, words in zip(sample.story_ids, sample.story, strict=True):
            found = reader.read(line, words)
            if found is not None:
                problem = f"line {line}: {found}"
                break
        if problem is None:
            try:
                answer, supports = reader.answer(sample.question)
            except _Unanswerable as exc:
                problem = str(exc)
            else:
                if sample.answer != answer:
                    problem = f"the answer is {answer}, not {sample.answer}"
                elif sample.supporting_ids not in supports:
                    shown = " or ".join(" ".join(map(str, s)) for s in supports)
                    problem = f"the supporting IDs are {shown}, not {' '.join(map(str, sample.supporting_ids))}"
        if problem is not None:
            problems.append(f"{sample.source}: {' '.join(sample.question)!r}: {problem}")
    return problems
