"""Batch order is a pure function of (seed, step): resuming reads the same batches. Token sources
tokenize only the rows a batch asks for and cut every batch to the same width on every process."""
import numpy as np
import transformers

from w2s.data import TextRows, Tokenized, batch_indices, bucket_width, one_hot
from w2s.models import resolve_model_dir

TEXTS = ["a dog", "What is a mountain ash? A tree of the rose family with pinnate leaves and red berries.",
         "salt", "an ice cream cone", "a word", "the final line of a long but not the longest text here"]


def minilm_tokenizer():
    return transformers.AutoTokenizer.from_pretrained(resolve_model_dir("minilm"))


def test_batches_cover_each_epoch_once_and_are_resumable():
    n, b = 10, 4
    steps = [batch_indices(n, b, seed=3, step=s) for s in range(5)]  # 20 indices = 2 epochs
    flat = np.concatenate(steps)
    assert sorted(flat[:10]) == list(range(10)) and sorted(flat[10:]) == list(range(10))
    np.testing.assert_array_equal(batch_indices(n, b, seed=3, step=3), steps[3])
    assert not np.array_equal(np.concatenate([batch_indices(n, b, 4, s) for s in range(3)]), flat[:12])


def test_batch_larger_than_dataset_wraps_epochs():
    idx = batch_indices(3, 7, seed=0, step=0)
    assert len(idx) == 7 and set(idx) == {0, 1, 2}


def test_one_hot():
    np.testing.assert_array_equal(one_hot(np.array([0, 1])), [[1, 0], [0, 1]])


def test_bucket_width_is_a_power_of_two_between_8_and_the_limit():
    assert [bucket_width(n, 64) for n in (0, 1, 8, 9, 16, 17, 40, 64, 500)] == [8, 8, 8, 16, 16, 32, 64, 64, 64]
    assert bucket_width(40, 48) == 48


def test_text_rows_tokenize_only_the_rows_asked_for_and_equal_the_tokenizer():
    tokenizer = minilm_tokenizer()
    calls = []

    def counting(texts, **kw):
        calls.append(list(texts))
        return tokenizer(texts, **kw)

    counting.pad_token_id = tokenizer.pad_token_id
    rows = TextRows.of(counting, TEXTS, max_length=16)
    batch = rows.batch(np.array([2, 0]))
    assert calls == [["a dog", "salt"]]  # only these two (in text order), in one call
    direct = tokenizer(["salt", "a dog"], padding="max_length", max_length=8, truncation=True)
    np.testing.assert_array_equal(batch["input_ids"], direct["input_ids"])
    np.testing.assert_array_equal(batch["attention_mask"], direct["attention_mask"])

    view = rows.take(np.array([1, 2]))  # shares the cache: "salt" is not tokenized again
    long = view.batch(np.array([0, 1]))
    assert calls[1] == [TEXTS[1]] and long["input_ids"].shape == (2, 16)  # truncated to max_length
    assert long["attention_mask"][0].sum() == 16 and long["input_ids"][0, -1] == tokenizer.sep_token_id
    assert rows.batch(np.array([0]), widest=lambda n: 12)["input_ids"].shape == (1, 16)  # another process's row
    assert rows.batch(np.array([], np.int64))["input_ids"].shape == (0, 8)  # a process with no rows here


def test_a_prefix_gets_room_of_its_own_and_never_truncates_the_text():
    tokenizer = minilm_tokenizer()
    prefix = "(label from a weak supervisor that judges words by their spelling, not their meaning) "
    rows = TextRows.of(tokenizer, ["aardvark", "salt"], max_length=16)
    plain, prefixed = rows.batch(np.array([0]))["input_ids"][0], rows.prefixed(prefix).batch(np.array([0]))["input_ids"][0]
    word = [t for t in plain if t not in (tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.pad_token_id)]
    kept = [int(t) for t in prefixed if t != tokenizer.pad_token_id]
    assert kept[-len(word) - 1:-1] == [int(t) for t in word] and kept[-1] == tokenizer.sep_token_id
    assert len(kept) > 16  # the prefix alone is longer than the texts' max_length


def test_text_rows_and_tokenized_arrays_cut_batches_alike():
    tokenizer = minilm_tokenizer()
    encoded = tokenizer(TEXTS, padding="max_length", max_length=32, truncation=True, return_tensors="np")
    arrays = Tokenized(encoded["input_ids"].astype(np.int32), encoded["attention_mask"].astype(np.int32))
    rows = TextRows.of(tokenizer, TEXTS, max_length=32)
    for indices in ([0, 2], [0, 3, 5], [1, 4], [5]):
        a, b = arrays.batch(np.array(indices)), rows.batch(np.array(indices))
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])
