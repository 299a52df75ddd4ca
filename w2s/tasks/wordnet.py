"""Offline tasks built from the WordNet 3.0 database files, read with a small wndb(5WN) parser.

WordNet ships with Debian (`wordnet-base`) and NLTK, so these tasks need no network. Each task
splits by synset (no synset, and so no word, is on both sides) and balances classes exactly.
"""
from collections import defaultdict
from collections.abc import Iterable
import dataclasses
import functools
import os
import pathlib
import random
import sys

from w2s.config import ConfigError, MissingFileError
from w2s.tasks import Example, TaskData, register_task
from w2s.tasks.splits import halves

# Searched after $WNHOME/dict, $WNHOME and $WORDNET_DIR; module-level so tests can redirect them.
SYSTEM_DIRS = ["/usr/share/wordnet"]
NLTK_DIRS = [
    "~/nltk_data",
    "/usr/share/nltk_data",
    "/usr/local/share/nltk_data",
    os.path.join(sys.prefix, "share", "nltk_data"),
]
_HYPERNYM_POINTERS = ("@", "@i")  # Class and instance hypernyms.
_MAX_GLOSS_WORDS = 25
_FILE_POS = {"n": "noun", "v": "verb", "a": "adj", "r": "adv"}


@dataclasses.dataclass(frozen=True, slots=True)
class Synset:
    offset: int
    lex_filenum: int  # Lexicographer file, e.g. 5 = noun.animal, 6 = noun.artifact.
    lemmas: tuple[str, ...]  # As written in WordNet: underscores for spaces, case kept.
    hypernyms: tuple[int, ...]  # Offsets of same-POS class and instance hypernyms.
    gloss: str
    # Lexical antonym links: (lemma number here, target offset, lemma number there); numbers from 1.
    antonyms: tuple[tuple[int, int, int], ...] = ()

    @property
    def definition(self) -> str:
        """The gloss without its quoted usage examples (which follow the first '; "')."""
        return self.gloss.split('; "')[0].strip()


def _chosen_dirs() -> dict[str, list[pathlib.Path]]:
    """The folders that $WNHOME and $WORDNET_DIR, where set, say hold WordNet."""
    dirs = {}
    if home := os.environ.get("WNHOME"):
        dirs["WNHOME"] = [pathlib.Path(home, "dict"), pathlib.Path(home)]
    if wordnet_dir := os.environ.get("WORDNET_DIR"):
        dirs["WORDNET_DIR"] = [pathlib.Path(wordnet_dir)]
    return dirs


def search_dirs() -> list[pathlib.Path]:
    """Where WordNet's database files may be, in the order they are tried."""
    dirs = [d for chosen in _chosen_dirs().values() for d in chosen]
    dirs += [pathlib.Path(d) for d in SYSTEM_DIRS]
    nltk_dirs = os.environ.get("NLTK_DATA", "").split(os.pathsep) + NLTK_DIRS
    dirs += [pathlib.Path(d).expanduser() / "corpora" / "wordnet" for d in nltk_dirs if d]
    return dirs


def find_dir() -> pathlib.Path:
    """The first search directory holding data.noun, or an error that says how to get one. A variable
    set to a folder without WordNet is an error, not a silent fall-back to another copy."""
    for var, chosen in _chosen_dirs().items():
        if not any((d / "data.noun").is_file() for d in chosen):
            raise FileNotFoundError(
                f"${var}={os.environ[var]} holds no WordNet database (no data.noun in "
                f"{' or '.join(map(str, chosen))}); point it at one or unset it.")
    dirs = search_dirs()
    for d in dirs:
        if (d / "data.noun").is_file():
            return d
    looked = "\n".join(f"  {d}" for d in dirs)
    raise MissingFileError(
        f"WordNet database files (data.noun) not found. Looked in:\n{looked}\n"
        "Install them with `apt-get install wordnet-base` or `python -m nltk.downloader wordnet`, "
        "or point $WORDNET_DIR at a directory holding data.noun."
    )


def _database_file(kind: str, pos: str) -> str:
    """The path of data.* or index.* ('data', 'index') of one part of speech: what parses are cached by."""
    return str(find_dir() / f"{kind}.{_FILE_POS[pos]}")


def synsets(pos: str = "n") -> dict[int, Synset]:
    """All synsets of one part of speech ('n', 'v', 'a', 'r'), keyed by byte offset."""
    return _parse_data(_database_file("data", pos))


def first_senses(pos: str = "n") -> dict[str, int]:
    """Lower-cased lemma -> offset of its most frequent sense (index files list senses by use)."""
    return _parse_index(_database_file("index", pos))


def _database_lines(path: str) -> Iterable[str]:
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            if not line.startswith("  "):  # Licence header lines start with two spaces.
                yield line


@functools.lru_cache(maxsize=None)
def _parse_data(path: str) -> dict[int, Synset]:
    """Parses data.* lines: offset lex_filenum ss_type w_cnt (word lex_id)* p_cnt ptr* | gloss."""
    out = {}
    for line in _database_lines(path):
        head, _, gloss = line.partition("| ")
        fields = head.split()
        n_words = int(fields[3], 16)  # w_cnt is two hexadecimal digits.
        # Adjective lemmas may carry a syntactic marker such as "(p)"; drop it.
        lemmas = tuple(w.split("(")[0] for w in fields[4 : 4 + 2 * n_words : 2])
        p_at = 4 + 2 * n_words
        pointers = fields[p_at + 1 : p_at + 1 + 4 * int(fields[p_at])]
        ss_type = fields[2]
        hypernyms = tuple(
            int(pointers[i + 1])
            for i in range(0, len(pointers), 4)
            if pointers[i] in _HYPERNYM_POINTERS and pointers[i + 2] == ss_type
        )
        antonyms = tuple(
            (int(pointers[i + 3][:2], 16), int(pointers[i + 1]), int(pointers[i + 3][2:], 16))
            for i in range(0, len(pointers), 4)
            if pointers[i] == "!"
        )
        offset = int(fields[0])
        out[offset] = Synset(offset, int(fields[1]), lemmas, hypernyms, gloss.strip(), antonyms)
    return out


@functools.lru_cache(maxsize=None)
def _parse_index(path: str) -> dict[str, int]:
    """Parses index.* lines: lemma pos synset_cnt p_cnt ptr* sense_cnt tagsense_cnt offset*."""
    out = {}
    for line in _database_lines(path):
        fields = line.split()
        synset_cnt = int(fields[2])
        out[fields[0]] = int(fields[-synset_cnt])
    return out


def find_synset(lemma: str, gloss_start: str, pos: str = "n") -> Synset:
    """Looks a synset up by meaning, so no WordNet-version-specific offset is hard-coded."""
    found = [
        s
        for s in synsets(pos).values()
        if lemma in s.lemmas and s.gloss.startswith(gloss_start)
    ]
    if len(found) != 1:
        raise LookupError(
            f"expected one {pos} synset {lemma!r} with gloss {gloss_start!r}, found {len(found)}"
        )
    return found[0]


def descendants(roots: Iterable[Synset], pos: str = "n") -> set[int]:
    """Offsets of the roots and of every synset whose hypernym closure contains one of them."""
    children = _hyponyms(_database_file("data", pos))
    seen = {r.offset for r in roots}
    stack = list(seen)
    while stack:
        for child in children.get(stack.pop(), ()):
            if child not in seen:
                seen.add(child)
                stack.append(child)
    return seen


@functools.lru_cache(maxsize=None)
def _hyponyms(path: str) -> dict[int, tuple[int, ...]]:
    """Offset -> offsets of its direct hyponyms (hypernym links reversed): built once per database,
    as every seed's task walks it."""
    children = defaultdict(list)
    for s in _parse_data(path).values():
        for h in s.hypernyms:
            children[h].append(s.offset)
    return {offset: tuple(kids) for offset, kids in children.items()}


def _plain_word(lemma: str) -> bool:
    """Common lower-case words of at most three tokens: word knowledge, not names or codes."""
    return lemma.islower() and lemma.count("_") < 3 and not any(map(str.isdigit, lemma))


def words() -> dict[int, str]:
    """Noun synset offset -> one word: its first plain lemma whose most frequent sense it is.

    Keeping only a lemma's first sense gives every text exactly one synset, so the label of a
    word is that of its everyday meaning and no text can appear in both splits. Computed once per
    database and shared by every task of the process: read it, never change it.
    """
    folder = find_dir()
    return _words(str(folder / "data.noun"), str(folder / "index.noun"))


@functools.lru_cache(maxsize=None)
def _words(data_path: str, index_path: str) -> dict[int, str]:
    first = _parse_index(index_path)
    out = {}
    for s in _parse_data(data_path).values():
        for lemma in s.lemmas:
            if _plain_word(lemma) and first.get(lemma.lower()) == s.offset:
                out[s.offset] = lemma.replace("_", " ")
                break
    return out


def glossed_nouns(nouns: dict[int, Synset], vocab: dict[int, str]) -> list[int]:
    """Offsets, sorted, of the words' synsets (`vocab`, from words()) whose definition has 1 to
    _MAX_GLOSS_WORDS words: the definition tasks drop long ones to keep texts short for CPU runs."""
    return sorted(o for o in vocab if 0 < len(nouns[o].definition.split()) <= _MAX_GLOSS_WORDS)


def by_lexicographer_file(offsets: list[int], nouns: dict[int, Synset]) -> dict[int, list[int]]:
    """Offsets grouped by their synset's lexicographer file (its coarse topic), in their order:
    where same-topic distractor definitions come from."""
    groups: dict[int, list[int]] = defaultdict(list)
    for o in offsets:
        groups[nouns[o].lex_filenum].append(o)
    return groups


# The category tasks' roots, by meaning: (lemma, gloss start) of each root synset.
_CATEGORY_ROOTS = {
    "wordnet_living": [("organism", "a living thing")],
    "wordnet_artifact": [("artifact", "a man-made object")],
    # food.n.02 (solid food) is not a hyponym of food.n.01 (nutrient), so both are roots.
    "wordnet_food": [("food", "any substance that can be metabolized"),
                     ("food", "any solid substance (as opposed to liquid)")],
}


CATEGORY_TASKS = tuple(_CATEGORY_ROOTS)  # the tasks whose label is membership of a part of the hierarchy


def category_roots(task: str) -> list[Synset]:
    """The root synsets of a category task: its words under them are label 1."""
    if task not in _CATEGORY_ROOTS:
        raise ConfigError(f"{task!r} is not a WordNet category task; those are {', '.join(CATEGORY_TASKS)}.")
    return [find_synset(lemma, gloss) for lemma, gloss in _CATEGORY_ROOTS[task]]


def _category_task(
    name: str, roots: list[Synset], seed: int, n_train: int, n_test: int
) -> TaskData:
    """Label 1 for words under `roots` in the hypernym hierarchy, 0 for all other nouns."""
    half_train, half_test = halves(name, n_train, n_test)
    vocab = words()
    inside = descendants(roots)
    rng = random.Random(seed)
    train, test = [], []
    for label in (0, 1):
        offsets = sorted(o for o in vocab if (o in inside) == bool(label))
        if len(offsets) < half_train + half_test:
            raise ConfigError(
                f"{name}: WordNet has {len(offsets)} eligible words of class {label}, but "
                f"n_train={n_train}, n_test={n_test} need {half_train + half_test} of each class"
            )
        picked = rng.sample(offsets, half_train + half_test)
        train += [(vocab[o], label) for o in picked[:half_train]]
        test += [(vocab[o], label) for o in picked[half_train:]]
    rng.shuffle(train)
    rng.shuffle(test)
    return TaskData(name, train, test)


@register_task("wordnet_living")
def wordnet_living(seed: int, n_train: int = 4000, n_test: int = 1000) -> TaskData:
    """Is this noun a living thing (organism.n.01: animals, plants, people, microbes)?"""
    return _category_task("wordnet_living", category_roots("wordnet_living"), seed, n_train, n_test)


@register_task("wordnet_artifact")
def wordnet_artifact(seed: int, n_train: int = 4000, n_test: int = 1000) -> TaskData:
    """Is this noun man-made (artifact.n.01: tools, buildings, clothing, vehicles...)?"""
    return _category_task("wordnet_artifact", category_roots("wordnet_artifact"), seed, n_train, n_test)


@register_task("wordnet_food")
def wordnet_food(seed: int, n_train: int = 2000, n_test: int = 500) -> TaskData:
    """Is this noun food? Roots: food.n.01 (nutrient: what animals metabolize, incl. beverages)
    and food.n.02 (solid food: dishes, produce, baked goods), which is not a hyponym of food.n.01.
    Smaller default sizes: the food subtree has fewer plain first-sense words.
    """
    return _category_task("wordnet_food", category_roots("wordnet_food"), seed, n_train, n_test)


@register_task("wordnet_gloss")
def wordnet_gloss(seed: int, n_train: int = 4000, n_test: int = 1000) -> TaskData:
    """Does this definition fit the word? Distractors are glosses from the word's lexicographer
    file (same coarse topic), so topic alone cannot tell them apart."""
    half_train, half_test = halves("wordnet_gloss", n_train, n_test)
    nouns = synsets("n")
    vocab = words()
    offsets = glossed_nouns(nouns, vocab)
    rng = random.Random(seed)
    rng.shuffle(offsets)
    if len(offsets) < n_train + n_test:
        raise ConfigError(
            f"wordnet_gloss: WordNet has {len(offsets)} eligible synsets, but n_train={n_train}, "
            f"n_test={n_test} need {n_train + n_test}"
        )
    # Each side of the split draws questions and distractors only from its own synsets.
    cut = len(offsets) * n_train // (n_train + n_test)
    sides = ((offsets[:cut], half_train), (offsets[cut:], half_test))
    train, test = (_gloss_side(side, half, nouns, vocab, rng) for side, half in sides)
    return TaskData("wordnet_gloss", train, test)


def _gloss_side(
    side: list[int], half: int, nouns: dict[int, Synset], vocab: dict[int, str], rng: random.Random
) -> list[Example]:
    by_file = by_lexicographer_file(side, nouns)
    examples = [(f"What is a {vocab[o]}? {nouns[o].definition}", 1) for o in side[:half]]
    for o in side[half:]:
        if len(examples) == 2 * half:
            break
        definition = nouns[o].definition
        for _ in range(10):  # A same-file synset with another definition; nearly always first try.
            other = nouns[rng.choice(by_file[nouns[o].lex_filenum])].definition
            if other != definition:
                examples.append((f"What is a {vocab[o]}? {other}", 0))
                break
    if len(examples) < 2 * half:
        found = len(examples) - half
        raise ConfigError(f"wordnet_gloss: found distractors for only {found} of {half} examples")
    rng.shuffle(examples)
    return examples
