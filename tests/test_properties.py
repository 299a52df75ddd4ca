"""Property-based tests of what users hand in: task functions (the plug-in path) and their examples,
local files for the hub tasks, --config overrides and labels files. Whatever the input, the result
is valid data or a ValueError (ConfigError, SupervisorError) naming the task, file, row or key;
never a TypeError, KeyError or AttributeError from deep inside."""
import csv
import json
import pathlib
import tempfile

import ml_collections
import numpy as np
import pytest
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st

from w2s import tasks
from w2s.config import ConfigError, _keys, apply_overrides, load_config_file
from w2s.active_learning.supervisor import SupervisorError, labels_file
from w2s.tasks import TaskData, load_task

ROOT = pathlib.Path(__file__).resolve().parents[1]
FEW = settings(max_examples=60, deadline=None)
FILES = settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

# -- task functions and their examples ---------------------------------------------------------------

TEXTS = st.one_of(
    st.text(max_size=20),  # empty and whitespace-only too
    st.text(st.characters(codec=None, categories=("Cs", "Co", "Cc", "Zs", "So")), min_size=1, max_size=5),
    st.just("w" * 200_000),
    st.binary(max_size=4), st.none(), st.integers(), st.floats(),
)
LABELS = st.one_of(
    st.integers(-2, 3), st.booleans(), st.floats(), st.text(max_size=2), st.none(),
    st.sampled_from([np.int64(1), np.int8(0), np.float32(1.0), np.bool_(True), 1 + 0j, [1], (0,)]),
)
EXAMPLES = st.one_of(st.tuples(TEXTS, LABELS), st.lists(st.one_of(TEXTS, LABELS), max_size=3), TEXTS, LABELS,
                     st.dictionaries(st.text(max_size=2), LABELS, max_size=2))
GOOD_SPLITS = st.lists(st.tuples(st.text(min_size=1).filter(str.strip),
                                  st.sampled_from([0, 1, True, np.int64(1), np.int8(0)])), min_size=1, max_size=4)
SPLITS = st.one_of(GOOD_SPLITS, st.lists(st.one_of(EXAMPLES, GOOD_SPLITS), max_size=4), EXAMPLES,
                   st.dictionaries(st.text(max_size=2), EXAMPLES, max_size=2))
RETURNED = st.one_of(
    st.fixed_dictionaries({"train": GOOD_SPLITS, "test": GOOD_SPLITS}),
    st.fixed_dictionaries({"train": SPLITS, "test": SPLITS}),
    st.dictionaries(st.sampled_from(["train", "test", "dev"]), SPLITS, max_size=3),
    SPLITS, st.builds(TaskData, st.text(max_size=3), SPLITS, SPLITS),
)

returned = None  # what returned_task returns: set by the test, read through the plug-in path


def returned_task(seed):
    return returned


def no_seed():
    return {}


@FEW
@given(RETURNED)
def test_whatever_a_task_returns_loads_or_is_refused_by_name(value):
    global returned
    returned = value
    try:
        data = load_task("tests.test_properties:returned_task")
    except ValueError as e:
        assert "task 'tests.test_properties:returned_task'" in str(e)
        return
    event("loaded")
    for text, label in data.train + data.test:
        assert type(text) is str and text.strip() and text.encode() and type(label) is int and label in (0, 1)
    assert data.train and data.test


@FEW
@given(st.one_of(st.text(max_size=12), st.builds("{}:{}".format, st.sampled_from(
    ["tests.test_properties", "w2s_no_such_module", "tests.no_such", "", "."]), st.text(max_size=12))),
    st.dictionaries(st.text(max_size=6), st.integers(), max_size=2))
def test_any_task_name_or_option_loads_or_is_refused_clearly(name, options):
    assume(name not in tasks.list_tasks() and name != "tests.test_properties:returned_task")
    with pytest.raises(ValueError, match=r"task|module"):
        load_task(name, **options)


def test_a_task_function_without_a_seed_is_refused_by_name():
    with pytest.raises(ValueError, match=r"task 'tests.test_properties:no_seed' cannot be called"):
        load_task("tests.test_properties:no_seed")


# -- hub tasks from local files ------------------------------------------------------------------------

COLUMNS = {
    "sciq": ("question", "correct_answer", "distractor1", "distractor2", "distractor3"),
    "boolq": ("passage", "question", "answer"),
    "amazon_polarity": ("title", "content", "label"),
    "cosmos_qa": ("context", "question", "answer0", "answer1", "answer2", "answer3", "label"),
    "anthropic_hh": ("chosen", "rejected"),
}
CELLS = st.one_of(st.text(max_size=8), st.sampled_from(["", " ", "é\u200b", "x" * 5000]), st.none(),
                  st.integers(-1, 4), st.booleans(), st.floats(allow_nan=False))
LABEL_CELLS = {"answer": st.booleans(), "label": st.integers(0, 1)}


def rows(task: str):
    """Rows as the task expects them (a file that loads), or with cells missing or of any type."""
    good = st.fixed_dictionaries({c: LABEL_CELLS.get(c, st.text(min_size=1, max_size=8)) for c in COLUMNS[task]})
    bad = st.fixed_dictionaries({}, optional={c: CELLS for c in COLUMNS[task]})
    return st.one_of(st.lists(good, min_size=1, max_size=6), st.lists(st.one_of(good, bad), min_size=1, max_size=6))


@pytest.fixture
def files(tmp_path, monkeypatch):
    datasets = pytest.importorskip("datasets")
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "cache")
    return tmp_path


def write(folder: pathlib.Path, fmt: str, split: str, data: list[dict]) -> str:
    path = folder / f"{split}.{fmt}"
    if fmt == "jsonl":
        path.write_text("".join(json.dumps(row) + "\n" for row in data), encoding="utf-8")
    else:
        columns = sorted({c for row in data for c in row})
        with open(path, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, columns)
            writer.writeheader()
            writer.writerows(data)
    return str(path)


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
@FILES
@given(data=st.data())
def test_hub_task_on_any_local_file_loads_or_names_the_file_and_row(files, fmt, data):
    task = data.draw(st.sampled_from(sorted(COLUMNS)))
    folder = pathlib.Path(tempfile.mkdtemp(dir=files, prefix=fmt))
    path = {split: write(folder, fmt, split, data.draw(rows(task))) for split in ("train", "test")}
    try:
        loaded = load_task(task, n_train=None, n_test=None, path=path)
    except ValueError as e:
        assert task in str(e) and (str(folder) in str(e) or "split" in str(e)), e
        return
    event("loaded")
    for text, label in loaded.train + loaded.test:
        assert type(text) is str and text.strip() and label in (0, 1)


# -- config overrides -----------------------------------------------------------------------------------

CONFIG = load_config_file(ROOT / "experiments" / "quickstart.py")


def _get(cfg: ml_collections.ConfigDict, key: str):
    for part in key.split("."):
        cfg = cfg[part]
    return cfg


VALUES = st.one_of(st.text(max_size=12), st.sampled_from(
    ["1", "0", "-1", "1.5", "1e400", "nan", "true", "None", "(1,", "[[[[[[[[", "(" * 200 + ")" * 200,
     "9" * 5000, "{'a': 1}", "a,b", "0x10", "1_000", "\x00", "é"]))


@FEW
@given(st.lists(st.tuples(st.one_of(st.sampled_from(_keys(CONFIG)), st.text(max_size=10)), VALUES,
                          st.booleans()), max_size=4))
def test_overrides_apply_with_the_replaced_type_or_name_the_key(overrides):
    argv = []
    for key, value, spaced in overrides:
        argv += [f"--config.{key}", value] if spaced else [f"--config.{key}={value}"]
    try:
        cfg = apply_overrides(CONFIG, argv)
    except ConfigError as e:
        assert "--config." in str(e) or "unrecognised argument" in str(e)
        return
    event("applied")
    for key in _keys(CONFIG):
        old, new = _get(CONFIG, key), _get(cfg, key)
        if old is not None:
            assert type(new) is type(old), (key, old, new)


def typed_value(current):
    """A command-line value of the replaced value's type."""
    if isinstance(current, bool):
        return st.sampled_from(["true", "false", "1", "0", "True"])
    if isinstance(current, int):
        return st.integers(-10**6, 10**6).map(str)
    if isinstance(current, float):
        return st.floats(allow_nan=False, allow_infinity=False).map(repr)
    if isinstance(current, tuple):
        return st.lists(st.sampled_from(["xent", "aux_conf", "0", "1"]), min_size=1, max_size=3).map(",".join)
    return st.text(max_size=12)


LEAVES = [k for k in _keys(CONFIG) if not isinstance(_get(CONFIG, k), ml_collections.ConfigDict)]


@FEW
@given(st.data())
def test_well_typed_overrides_apply_and_keep_their_type(data):
    keys = data.draw(st.lists(st.sampled_from(LEAVES), min_size=1, max_size=4, unique=True))
    values = {k: data.draw(typed_value(_get(CONFIG, k))) for k in keys}
    cfg = apply_overrides(CONFIG, [f"--config.{k}={v}" for k, v in values.items()])
    for key, raw in values.items():
        old, new = _get(CONFIG, key), _get(cfg, key)
        assert old is None or type(new) is type(old), (key, raw, new)
        if isinstance(old, (int, float)) and not isinstance(old, bool):
            assert new == float(raw)


# -- labels files ---------------------------------------------------------------------------------------

NUMBERS = st.one_of(st.integers(-1, 2), st.floats(), st.sampled_from([0.25, 0.75, 1, 0]))
ROWS = st.one_of(  # ragged, out of range, non-finite, text, None, or not a list at all
    st.lists(NUMBERS, max_size=6), st.lists(st.lists(NUMBERS, max_size=3), max_size=6),
    st.lists(st.one_of(NUMBERS, st.text(max_size=3), st.none(), st.booleans()), max_size=6),
    NUMBERS, st.text(max_size=4), st.dictionaries(st.text(max_size=2), NUMBERS, max_size=2),
)


def good_rows(n: int):
    """n labels in {0, 1}, or n pairs of class probabilities."""
    return st.one_of(st.lists(st.sampled_from([0, 1]), min_size=n, max_size=n),
                     st.lists(st.floats(0, 1).map(lambda p: [1 - p, p]), min_size=n, max_size=n))


def write_labels(path: pathlib.Path, rows) -> None:
    if path.suffix == ".json":
        path.write_text(json.dumps(rows))
    elif path.suffix == ".csv":
        rows = rows if isinstance(rows, list) else [rows]
        lines = (",".join(map(str, r)) if isinstance(r, list) else str(r) for r in rows)
        path.write_text("\n".join(lines), encoding="utf-8", errors="surrogatepass")
    else:
        try:
            array = np.asarray(rows)
        except ValueError:  # ragged: an object array, which needs pickle to load
            array = np.asarray(rows, dtype=object)
        np.save(path, array)


@pytest.mark.parametrize("suffix", [".json", ".csv", ".npy"])
@pytest.mark.filterwarnings("ignore:loadtxt. input contained no data")  # an empty .csv: refused by shape
@FILES
@given(data=st.data())
def test_labels_file_loads_or_names_the_file(tmp_path, suffix, data):
    pool = data.draw(st.integers(1, 4))
    path = tmp_path / f"labels{suffix}"
    write_labels(path, data.draw(st.one_of(good_rows(pool), ROWS)))
    how = data.draw(st.sampled_from(["as written", "as written", "truncate", "garbage"]))
    if how == "truncate":
        path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    elif how == "garbage":
        path.write_bytes(data.draw(st.binary(min_size=1, max_size=64)))
    try:
        lookup = labels_file(path, pool)
    except SupervisorError as e:
        assert str(path) in str(e)
        return
    event("loaded")
    answers = lookup(np.arange(pool), [""] * pool)
    assert answers.shape == (pool, 2) and np.isfinite(answers).all()
    assert (answers >= 0).all() and np.allclose(answers.sum(1), 1, atol=1e-3)
