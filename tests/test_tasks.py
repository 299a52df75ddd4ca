"""Tasks: the WordNet parser and tasks on the real database, the registry, and the hub tasks on
small local files read through `datasets`."""
import json
import re
import random
import sys
import time

import numpy as np
import pytest

from w2s import tasks
from w2s.tasks import TaskData, hf, load_task, wordnet

WORDNET_TASKS = ["wordnet_living", "wordnet_artifact", "wordnet_food", "wordnet_gloss"]


def _balance(examples):
    return sum(label for _, label in examples) / len(examples)


# --- WordNet parser -------------------------------------------------------------------------


def test_parser_reads_wordnet_30_counts_quickly():
    path = str(wordnet.find_dir() / "data.noun")
    wordnet._parse_data.cache_clear()
    start = time.perf_counter()
    nouns = wordnet._parse_data(path)
    assert time.perf_counter() - start < 3.0  # Measured ~0.5 s; the target is < 2 s.
    assert len(nouns) == 82115  # WordNet 3.0.
    assert len(wordnet.synsets("v")) == 13767
    organism = wordnet.find_synset("organism", "a living thing")
    assert organism.lemmas == ("organism", "being")
    assert organism.lex_filenum == 3  # noun.Tops.
    blunder = next(s for s in nouns.values() if s.lemmas[0] == "blunder")
    assert len(blunder.lemmas) == 11 and blunder.lemmas[-1] == "boo-boo"  # w_cnt "0b" is hex.
    assert blunder.gloss == "an embarrassing mistake"


def test_parser_on_a_synthetic_database(tmp_path, monkeypatch):
    header = "  1 This software and database is provided under a licence.  \n  2   \n"
    (tmp_path / "data.noun").write_text(
        header
        + "00000010 03 n 0a a 0 b 0 c 0 d 0 e 0 f 0 g 0 h 0 i 0 j 0 001 ~ 00000020 n 0000 "
        "| the root; \"an example\"  \n"
        + "00000020 05 n 01 Kid 0 002 @ 00000010 n 0000 + 00000030 v 0101 | a child  \n"
    )
    (tmp_path / "index.noun").write_text(header + "kid n 1 1 @ 1 0 00000020  \n")
    monkeypatch.setenv("WORDNET_DIR", str(tmp_path))
    monkeypatch.delenv("WNHOME", raising=False)
    nouns = wordnet.synsets("n")
    assert sorted(nouns) == [10, 20]
    assert nouns[10].lemmas == tuple("abcdefghij") and nouns[10].definition == "the root"
    assert nouns[20] == wordnet.Synset(20, 5, ("Kid",), (10,), "a child")
    assert wordnet.first_senses("n") == {"kid": 20}
    assert wordnet.descendants([nouns[10]]) == {10, 20}


@pytest.mark.parametrize("var, where", [("WNHOME", "{d}/dict or {d}"), ("WORDNET_DIR", "{d}")])
def test_a_variable_naming_a_folder_without_wordnet_is_an_error(tmp_path, monkeypatch, var, where):
    for other in ("WNHOME", "WORDNET_DIR"):
        monkeypatch.delenv(other, raising=False)
    monkeypatch.setenv(var, str(tmp_path))  # while the system's WordNet is there to fall back on
    with pytest.raises(FileNotFoundError, match=re.escape(f"${var}={tmp_path} holds no WordNet database "
                                                          f"(no data.noun in {where.format(d=tmp_path)})")):
        load_task("wordnet_living")


def test_not_found_lists_every_place_searched(tmp_path, monkeypatch):
    for var in ("WNHOME", "WORDNET_DIR"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NLTK_DATA", str(tmp_path / "nltk_data"))
    monkeypatch.setattr(wordnet, "SYSTEM_DIRS", [str(tmp_path / "system")])
    monkeypatch.setattr(wordnet, "NLTK_DIRS", [str(tmp_path / "nltk")])
    with pytest.raises(FileNotFoundError) as e:
        load_task("wordnet_living")
    message = str(e.value)
    for place in [
        tmp_path / "system",
        tmp_path / "nltk_data" / "corpora" / "wordnet",
        tmp_path / "nltk" / "corpora" / "wordnet",
    ]:
        assert f"  {place}\n" in message
    assert "apt-get install wordnet-base" in message and "nltk.downloader wordnet" in message


# --- WordNet tasks --------------------------------------------------------------------------


def _offset(text):
    """Each task text is a lemma whose first sense is its synset."""
    return wordnet.first_senses("n")[text.replace(" ", "_")]


def test_words_are_computed_once_per_database(tmp_path, monkeypatch):
    """Every task and seed of a process shares one word list; another database gets its own."""
    assert wordnet.words() is wordnet.words()
    real = wordnet.find_dir()
    for name in ("data.noun", "index.noun"):
        (tmp_path / name).write_text((real / name).read_text(encoding="utf-8", errors="replace"))
    monkeypatch.setenv("WORDNET_DIR", str(tmp_path))
    monkeypatch.delenv("WNHOME", raising=False)
    other = wordnet.words()
    assert other is not wordnet._words(str(real / "data.noun"), str(real / "index.noun"))
    assert other == wordnet._words(str(real / "data.noun"), str(real / "index.noun"))


def test_living_labels_follow_the_hypernym_hierarchy():
    living = wordnet.descendants([wordnet.find_synset("organism", "a living thing")])
    by_word = {w: o for o, w in wordnet.words().items()}
    assert by_word["dog"] in living and by_word["person"] in living
    assert by_word["hammer"] not in living and by_word["idea"] not in living
    data = load_task("wordnet_living", n_train=400, n_test=200)
    for text, label in data.train + data.test:
        assert label == (_offset(text) in living), text


@pytest.mark.parametrize("name", WORDNET_TASKS)
def test_wordnet_task_splits_balance_and_seeds(name):
    data = load_task(name, seed=0, n_train=1000, n_test=400)
    assert (len(data.train), len(data.test)) == (1000, 400)
    assert _balance(data.train) == 0.5 and _balance(data.test) == 0.5
    assert load_task(name, seed=0, n_train=1000, n_test=400) == data
    assert load_task(name, seed=1, n_train=1000, n_test=400).train != data.train
    if name != "wordnet_gloss":
        train, test = {_offset(t) for t, _ in data.train}, {_offset(t) for t, _ in data.test}
        assert len(train) == 1000 and len(test) == 400 and not train & test
        assert all(len(t.split()) <= 3 and t.islower() for t, _ in data.train)


def test_gloss_distractors_are_same_file_and_same_side():
    nouns, vocab = wordnet.synsets("n"), wordnet.words()
    by_definition = {}
    for o in vocab:
        by_definition.setdefault(nouns[o].definition, set()).add(o)
    data = load_task("wordnet_gloss", n_train=1000, n_test=400)
    sides = []
    for examples in (data.train, data.test):
        used = set()
        for text, label in examples:
            word, definition = text.removeprefix("What is a ").split("? ", 1)
            subject = _offset(word)
            glossed = by_definition[definition]
            assert (subject in glossed) == bool(label), text
            assert any(nouns[g].lex_filenum == nouns[subject].lex_filenum for g in glossed)
            used |= {subject} | glossed
        sides.append(used)
    assert not sides[0] & sides[1]


def test_too_few_and_odd_sizes_are_errors():
    with pytest.raises(ValueError, match=r"WordNet has \d+ eligible words of class 1"):
        load_task("wordnet_food", n_train=4000)
    with pytest.raises(ValueError, match=r"WordNet has \d+ eligible synsets"):
        load_task("wordnet_gloss", n_test=100_000)
    with pytest.raises(ValueError, match="even"):
        load_task("wordnet_living", n_train=9)


# --- Registry -------------------------------------------------------------------------------


def test_builtin_tasks_are_registered():
    assert tasks.list_tasks() == sorted(
        WORDNET_TASKS + ["sciq", "boolq", "amazon_polarity", "cosmos_qa", "anthropic_hh", "tweet_sentiment",
                         "bbc_topic", "held_out"]
    )


def test_unknown_task_lists_known_and_close_matches():
    with pytest.raises(ValueError) as e:
        load_task("wordnet_livng")
    assert "Did you mean 'wordnet_living'" in str(e.value)
    assert ", ".join(tasks.list_tasks()) in str(e.value)


def test_unknown_option_names_it_and_the_accepted_ones():
    with pytest.raises(ValueError, match=r"no option 'n_trian'\. Did you mean 'n_train'\? "
                       r"Accepted options: n_test, n_train\."):
        load_task("wordnet_living", n_trian=10)


def test_register_task_rejects_duplicates_and_accepts_dicts(monkeypatch):
    monkeypatch.setattr(tasks, "TASKS", tasks.TASKS.copy())

    @tasks.register_task("toy")
    def toy(seed, n=2):
        return {"train": [("a", True), ("b", np.int64(0))] * n, "test": [["c", np.int32(1)]]}

    tasks.register_task("toy")(toy)  # the same task again: a config file loaded twice
    with pytest.raises(ValueError, match=r"task 'toy' is already registered by tests\.test_tasks\..*toy"):
        tasks.register_task("toy")(lambda seed: {})
    data = load_task("toy", n=1)
    assert data == TaskData("toy", [("a", 1), ("b", 0)], [("c", 1)])
    assert all(type(label) is int for _, label in data.train + data.test)


@pytest.mark.parametrize("label", [1.0, "1", 2, -1, None])
def test_bad_label_names_split_index_and_value(monkeypatch, label):
    monkeypatch.setattr(tasks, "TASKS", tasks.TASKS.copy())
    bad = {"train": [("ok", 0)], "test": [("ok", 1), ("x", label)]}
    tasks.register_task("bad")(lambda seed: bad)
    with pytest.raises(ValueError, match=rf"task 'bad', split 'test', example 1: .*{label!r}"):
        load_task("bad")


@pytest.mark.parametrize("text", ["", "   ", None, b"bytes"])
def test_bad_text_is_refused(monkeypatch, text):
    monkeypatch.setattr(tasks, "TASKS", tasks.TASKS.copy())
    tasks.register_task("bad")(lambda seed: {"train": [(text, 0)], "test": [("ok", 1)]})
    with pytest.raises(ValueError, match="split 'train', example 0: text must be a non-empty str"):
        load_task("bad")


def test_plugin_task_from_module_function(tmp_path, monkeypatch):
    (tmp_path / "w2s_test_plugin.py").write_text(
        "def parity(seed, n_train=4):\n"
        "    make = lambda n: [(f'number {seed + i}', (seed + i) % 2) for i in range(n)]\n"
        "    return {'train': make(n_train), 'test': make(2)}\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "w2s_test_plugin", raising=False)
    data = load_task("w2s_test_plugin:parity", seed=3, n_train=6)
    assert data.name == "w2s_test_plugin:parity"
    assert data.train[0] == ("number 3", 1) and len(data.train) == 6
    with pytest.raises(ValueError, match="no option 'n'"):
        load_task("w2s_test_plugin:parity", n=3)
    with pytest.raises(ValueError, match="has no function 'missing'"):
        load_task("w2s_test_plugin:missing")


def test_held_out_splits_another_tasks_training_split_keeping_near_copies_together(monkeypatch):
    monkeypatch.setattr(tasks, "TASKS", tasks.TASKS.copy())
    words = [f"w{i}" for i in range(400)]

    @tasks.register_task("stories")
    def stories(seed, n_train=60):
        rng = random.Random(seed)
        # Every third story has a near-copy (one word changed): a pair must not straddle the split.
        train = []
        for i in range(n_train // 2):
            text = " ".join(rng.sample(words, 12))
            train.append((text, i % 2))
            if i % 3 == 0:
                train.append((text.rsplit(" ", 1)[0] + " changed", i % 2))
        return {"train": train, "test": [("a test story", 0), ("another test story", 1)]}

    inner = load_task("stories", seed=5, n_train=60)
    data = load_task("held_out", seed=5, task="stories", n_train=60, n_held_out=10)
    assert data.name == "held_out" and len(data.test) == 10 and _balance(data.test) == 0.5
    assert set(data.train) | set(data.test) <= set(inner.train) and not set(data.train) & set(data.test)
    assert not set(data.test) & set(inner.test)
    assert len(data.train) >= len(inner.train) - 10 - 5  # at most one dropped copy per held-out pair
    assert [e for e in inner.train if e in data.train] == data.train  # the rest keep their order
    shingles = lambda text: {" ".join(p) for p in zip(text.split(), text.split()[1:])}
    for held, _ in data.test:
        assert all(len(shingles(held) & shingles(t)) / len(shingles(held) | shingles(t)) < 0.5 for t, _ in data.train)
    assert load_task("held_out", seed=5, task="stories", n_train=60, n_held_out=10) == data
    assert load_task("held_out", seed=6, task="stories", n_train=60, n_held_out=10).test != data.test

    with pytest.raises(ValueError, match="option 'task' names the task"):
        load_task("held_out", n_held_out=10)
    with pytest.raises(ValueError, match="another task, not held_out itself"):
        load_task("held_out", task="held_out")
    with pytest.raises(ValueError, match="n_held_out must be positive and even"):
        load_task("held_out", task="stories", n_held_out=9)
    with pytest.raises(ValueError, match="cannot give 40 of each class to hold out"):
        load_task("held_out", task="stories", n_held_out=80)
    with pytest.raises(ValueError, match=r"task 'stories' has no option 'n_trian'"):
        load_task("held_out", task="stories", n_trian=60)


# --- Hub tasks on local files ---------------------------------------------------------------


@pytest.fixture
def local_datasets(tmp_path, monkeypatch):
    datasets = pytest.importorskip("datasets")
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "cache")
    return tmp_path


def _write_jsonl(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def _sciq_rows(n, prefix):
    return [
        {"question": f"{prefix} question {i}?", "correct_answer": f"right {i}",
         "distractor1": f"wrong {i}a", "distractor2": f"wrong {i}b", "distractor3": "",
         "support": "unused"}
        for i in range(n)
    ]


def test_sciq_from_a_local_directory(local_datasets):
    for split in ("train", "validation", "test"):
        _write_jsonl(local_datasets / "sciq" / f"{split}.jsonl", _sciq_rows(20, split))
    data = load_task("sciq", seed=0, n_train=30, n_test=10, path=str(local_datasets / "sciq"))
    assert (len(data.train), len(data.test)) == (30, 10)
    assert _balance(data.train) == 0.5 and _balance(data.test) == 0.5
    assert all(t.startswith("Q: test question") for t, _ in data.test)  # Labeled test is used.
    for text, label in data.train:
        assert text.startswith("Q: train question") and ("A: right" in text) == bool(label)
        assert "A: wrong" in text or label
    questions = [t.split(" A: ")[0] for t, _ in data.train]
    assert all(questions.count(q) == 2 for q in questions)  # One true, one false per question.
    again = load_task("sciq", seed=0, n_train=30, n_test=10, path=str(local_datasets / "sciq"))
    assert again == data
    with pytest.raises(ValueError, match="yields only 40 examples"):
        load_task("sciq", n_train=42, n_test=10, path=str(local_datasets / "sciq"))


def test_boolq_from_parquet_uses_validation(local_datasets):
    pd = pytest.importorskip("pandas")
    files = {}
    for split, n in (("train", 12), ("validation", 6)):
        files[split] = str(local_datasets / f"boolq_{split}.parquet")
        pd.DataFrame({
            "question": [f"is {split} {i} even" for i in range(n)],
            "answer": [i % 2 == 0 for i in range(n)],
            "passage": [f"Passage {i}." for i in range(n)],
        }).to_parquet(files[split])
    data = load_task("boolq", n_train=None, n_test=4, path=files)
    assert len(data.train) == 12 and len(data.test) == 4
    for text, label in data.train + data.test:
        passage, question = text.split("\nQ: ")
        i = int(question.split()[2])
        assert passage == f"Passage {i}." and label == (i % 2 == 0)
    assert all("validation" in t for t, _ in data.test)


def test_amazon_polarity_from_json(local_datasets):
    files = {}
    for split in ("train", "test"):
        rows = [{"label": i % 2, "title": f"Title {i}", "content": f"{split} review {i}"}
                for i in range(10)]
        files[split] = str(local_datasets / f"amazon_{split}.json")
        (local_datasets / f"amazon_{split}.json").write_text(json.dumps(rows))
    data = load_task("amazon_polarity", n_train=8, n_test=10, path=files)
    assert _balance(data.test) == 0.5
    for text, label in data.train:
        title, content = text.split("\n")
        assert content.startswith("train review") and int(title.split()[1]) % 2 == label


def test_cosmos_qa_skips_unlabeled_test(local_datasets):
    def rows(split, label):
        return [{"id": str(i), "context": f"{split} context {i}.", "question": "Why?",
                 **{f"answer{j}": f"answer {j}" for j in range(4)},
                 "label": (i % 4) if label else -1} for i in range(8)]
    files = {
        split: _write_jsonl(local_datasets / f"cosmos_{split}.jsonl", rows(split, split != "test"))
        for split in ("train", "validation", "test")
    }
    data = load_task("cosmos_qa", n_train=16, n_test=8, path=files)
    assert _balance(data.train) == 0.5 and _balance(data.test) == 0.5
    assert all(t.startswith("validation context") for t, _ in data.test)
    for text, label in data.train:
        i, answer = int(text.split()[2].rstrip(".")), int(text.rsplit(" ", 1)[1])
        assert text.endswith(f"Q: Why? A: answer {answer}") and (answer == i % 4) == bool(label)


def test_anthropic_hh_takes_one_side_per_pair(local_datasets):
    def rows(split):
        pairs = [{"chosen": f"\n\nHuman: {split} {i}?\n\nAssistant: good {i}",
                  "rejected": f"\n\nHuman: {split} {i}?\n\nAssistant: bad {i}"} for i in range(40)]
        return pairs + [{"chosen": "same", "rejected": "same"}]
    files = {split: _write_jsonl(local_datasets / "hh" / f"{split}.jsonl", rows(split))
             for split in ("train", "test")}
    data = load_task("anthropic_hh", n_train=None, n_test=None, path=files)
    assert len(data.train) == 40 and len(data.test) == 40  # The identical pair is dropped.
    assert 0.2 < _balance(data.train) < 0.8
    prompts = [t.split("\n\nAssistant")[0] for t, _ in data.train]
    assert len(set(prompts)) == 40 and all(t.startswith("Human: train") for t in prompts)
    for text, label in data.train:
        assert ("Assistant: good" in text) == bool(label)


def test_binarizers_are_pure_functions_of_row_and_rng():
    row = {"question": "Q?", "correct_answer": "yes", "distractor1": "no", "distractor2": "yes",
           "distractor3": " "}
    assert hf.sciq_examples(row, random.Random(0)) == [("Q: Q? A: yes", 1), ("Q: Q? A: no", 0)]
    assert hf.boolq_examples({"passage": "P.", "question": "is it", "answer": False}, None) == [
        ("P.\nQ: is it?", 0)]
    assert hf.amazon_polarity_examples({"title": " ", "content": " ", "label": 1}, None) == []
    pair = {"chosen": "A", "rejected": "B"}
    seen = {hf.anthropic_hh_examples(pair, random.Random(s))[0] for s in range(20)}
    assert seen == {("A", 1), ("B", 0)}


def test_missing_datasets_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)
    with pytest.raises(ImportError, match=r"pip install 'w2s\[hub\]'"):
        load_task("sciq")
