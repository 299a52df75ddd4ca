"""Co-writing (nudging and its reverse) with two tiny random models whose tokenizers differ (one
reads words, the other characters), and its evaluation on local question files."""
from __future__ import annotations

import dataclasses
import json
import pathlib
import re
import warnings

import numpy as np
import pytest
import tokenizers
import torch
import transformers

from w2s.generation import nudging_analysis, nudging_eval, qa
from w2s.config import apply_overrides
from w2s.generation.generate import GenerationConfig, Generator
from w2s.models.causal_lm import build_causal_lm
from w2s.generation.nudging import CoWriteConfig, co_write
from w2s.generation.nudging_eval import METHODS, build_prompt, paired_differences, run_nudging, word_analysis

from tests.test_hub import write_word_tokenizer

WORDS = [f"w{i}" for i in range(60)]
CHARS = ["Ġ", "w"] + [str(i) for i in range(10)]  # byte-level: Ġ is the space
PROMPTS = ["w1 w2 w3", "w4 w5"]
EXPERIMENT = pathlib.Path(__file__).resolve().parents[1] / "experiments" / "nudging.py"


def write_char_tokenizer(folder: pathlib.Path) -> None:
    """GPT-2-style byte-level BPE over a 12-character alphabet with no merges: one token a character."""
    vocab = {"<unk>": 0, "<|endoftext|>": 1, **{c: i + 2 for i, c in enumerate(CHARS)}}
    tok = tokenizers.Tokenizer(tokenizers.models.BPE(vocab, [], unk_token="<unk>"))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = tokenizers.decoders.ByteLevel()
    tok.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast", "eos_token": "<|endoftext|>", "unk_token": "<unk>",
    }))


def save_lm(folder: pathlib.Path, vocab: int, std: float, space_boost: float = 1.0) -> None:
    """A random Llama over exactly its tokenizer's ids, which draws neither <unk> nor eos (zero
    logits): every text it writes re-tokenizes to the tokens it drew, so writing word by word
    (re-reading the text each time) and writing in one go give the same text."""
    torch.manual_seed(0)
    config = transformers.LlamaConfig(
        vocab_size=vocab, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        intermediate_size=64, max_position_embeddings=128, bos_token_id=1, eos_token_id=1)
    model = transformers.LlamaForCausalLM(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, std)
        model.lm_head.weight[:2] = 0.0
        model.lm_head.weight[2] *= space_boost  # id 2 is the char model's space: it writes words
    model.save_pretrained(folder)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """(word-level model folder, character-level model folder)."""
    words, chars = tmp_path_factory.mktemp("words"), tmp_path_factory.mktemp("chars")
    save_lm(words, len(WORDS) + 2, 0.3)
    write_word_tokenizer(words, WORDS)
    save_lm(chars, len(CHARS) + 2, 1.0, space_boost=4.0)
    write_char_tokenizer(chars)
    return words, chars


@pytest.fixture(scope="module")
def pair(folders):
    """(word-level Generator, character-level Generator)."""
    return tuple(Generator(*build_causal_lm(str(f)), rows=2, max_length=96) for f in folders)


def _median_top1(gen: Generator) -> float:
    free = gen.generate(PROMPTS, GenerationConfig(max_new_tokens=12))
    return float(np.median([p for c in free for p in c.top1]))


def _check_spans(text, unit: str = "word") -> None:
    """Spans tile the text in order, and a helper writing words wrote one at a time."""
    assert text.spans[0].start == 0 and text.spans[-1].end == len(text.text)
    for a, b in zip(text.spans, text.spans[1:]):
        assert a.end == b.start
    for s in text.spans:
        assert s.end > s.start and s.tokens > 0
        if s.writer == "helper" and unit == "word":
            assert not re.search(r"\S\s", text.text[s.start:s.end])


def test_never_handing_over_is_the_driver_alone(pair):
    words, chars = pair
    alone = words.generate(PROMPTS, GenerationConfig(max_new_tokens=12))
    out = co_write(words, chars, PROMPTS, PROMPTS, CoWriteConfig(rule="never", max_new_tokens=12), progress=False)
    assert [o.text for o in out] == [a.text for a in alone]
    for o in out:
        assert o.reason == "length" and [(s.writer, s.tokens) for s in o.spans] == [("driver", 12)]


def test_always_handing_over_is_the_helper_word_by_word(pair):
    words, chars = pair
    free = chars.generate(PROMPTS, GenerationConfig(max_new_tokens=30))
    out = co_write(words, chars, PROMPTS, PROMPTS, CoWriteConfig(threshold=1.1, max_new_tokens=30), progress=False)
    for o, f in zip(out, free):
        _check_spans(o)
        assert {s.writer for s in o.spans} == {"helper"} and len(o.spans) > 1
        assert o.text == f.text and o.tokens("helper") == 30  # one character a token


def test_the_helper_writes_exactly_where_the_driver_is_unsure(pair, folders):
    words, chars = pair
    gamma = _median_top1(words)
    out = co_write(words, chars, PROMPTS, PROMPTS, CoWriteConfig(threshold=gamma, max_new_tokens=16), progress=False)
    writers = {s.writer for o in out for s in o.spans}
    assert writers == {"driver", "helper"}
    fresh = Generator(*build_causal_lm(str(folders[0])), rows=1, max_length=96)
    for prompt, o in zip(PROMPTS, out):
        _check_spans(o)
        for s in o.spans:
            (c,) = fresh.generate([prompt + o.text[:s.start]], GenerationConfig(max_new_tokens=s.tokens + 1))
            if s.writer == "helper":  # the driver's distribution there, as recorded for audit
                assert s.trigger[0] < gamma and s.trigger[0] == pytest.approx(c.top1[0], abs=1e-4)
            else:  # the driver wrote this span itself, every token of it sure enough
                assert c.text.startswith(o.text[s.start:s.end]) and min(c.top1[:s.tokens]) >= gamma


def test_reverse_mode_respects_budget_and_penalty(pair):
    words, chars = pair
    free = words.generate(PROMPTS, GenerationConfig(max_new_tokens=12))
    threshold = float(np.median([h for c in free for h in c.entropy]))
    base = CoWriteConfig(rule="entropy", threshold=threshold, unit="tokens", unit_tokens=3, max_new_tokens=24)

    def inserted(**kw):
        out = co_write(words, chars, PROMPTS, PROMPTS, dataclasses.replace(base, **kw), progress=False)
        for o in out:
            _check_spans(o, "tokens")
            assert all(s.trigger[1] > threshold for s in o.spans if s.writer == "helper")
        return [o.tokens("helper") for o in out]

    unlimited = inserted()
    assert max(unlimited) > 4
    assert all(n <= 4 for n in inserted(budget=4))
    assert all(n <= 3 for n in inserted(penalty=1e3))  # after one insertion, nothing is unsure enough


def test_a_stop_string_across_writers_ends_the_text(pair):
    words, chars = pair
    cfg = CoWriteConfig(threshold=_median_top1(words), max_new_tokens=16)
    (full, _) = co_write(words, chars, PROMPTS, PROMPTS, cfg, progress=False)
    seam = next(s.start for s in full.spans[1:] if s.start >= 2 and s.start + 2 <= len(full.text))
    stop = full.text[seam - 2: seam + 2]
    (cut, _) = co_write(words, chars, PROMPTS, PROMPTS, dataclasses.replace(cfg, stop=(stop,)), progress=False)
    assert cut.text == full.text[: full.text.index(stop)] and cut.reason == "stop"
    assert cut.spans[-1].end == len(cut.text)


def test_config_is_checked():
    with pytest.raises(ValueError, match="rule"):
        CoWriteConfig(rule="sometimes")
    with pytest.raises(ValueError, match="unit"):
        CoWriteConfig(unit="sentence")


def test_answers_are_read_off_the_text():
    assert qa.extract_number("so 3 + 4 = 7. The answer is 1,234.") == "1234"
    assert qa.extract_number("48/2 = 24\n#### 72\nQuestion: 5 apples") == "72"
    assert qa.extract_number("she has 5 left, then 12") == "12"
    assert qa.extract_number("no idea") is None
    assert qa.extract_choice(" B. Because plants need light", 4) == "B"
    assert qa.extract_choice("I think the answer is (C).", 4) == "C"
    assert qa.extract_choice("The answer is E", 4) is None
    math = qa.Question("q", "72", "math")
    assert qa.is_correct(math, "It is 72.0") and not qa.is_correct(math, "It is 71")
    assert not qa.is_correct(math, "nothing")


def test_tasks_read_local_files(tmp_path):
    gsm = tmp_path / "gsm.jsonl"
    gsm.write_text("\n".join(json.dumps({"question": f"q{i}?", "answer": f"work\n#### {i},000"}) for i in range(5)))
    arc = tmp_path / "arc.jsonl"
    arc.write_text(json.dumps({"question": "Which?", "choices": {"text": ["x", "y", "z"], "label": ["1", "2", "3"]},
                               "answerKey": "2"}))
    mmlu = tmp_path / "mmlu.json"
    mmlu.write_text(json.dumps([{"question": "Pick", "choices": ["a", "b", "c", "d"], "answer": 3}]))
    questions = qa.gsm8k(n=3, seed=1, path=str(gsm))
    assert len(questions) == 3 and all(q.answer == f"{q.text[1]}000" for q in questions)
    assert questions != qa.gsm8k(n=3, seed=2, path=str(gsm))
    (q,) = qa.multiple_choice(path=str(arc))
    assert (q.text, q.answer, q.choices) == ("Which?\nA. x\nB. y\nC. z", "B", 3)
    (q,) = qa.multiple_choice(path=str(mmlu))
    assert q.answer == "D" and qa.is_correct(q, " D") and not qa.is_correct(q, " A")


def test_chat_models_read_their_chat_template(pair):
    tokenizer = pair[0].tokenizer
    tokenizer.chat_template = ("{% for m in messages %}<u>{{ m['content'] }}</u>{% endfor %}"
                               "{% if add_generation_prompt %}<a>{% endif %}")
    assert build_prompt(tokenizer, "Q: {question}", True, "w1?") == "<u>Q: w1?</u><a>"
    assert build_prompt(tokenizer, "Q: {question}", False, "w1?") == "Q: w1?"


def _experiment_config(overrides: list[str]):
    from w2s.config import load_config_file

    return apply_overrides(load_config_file(EXPERIMENT), overrides)


def test_experiment_runs_on_local_models_and_files(folders, tmp_path, capsys, monkeypatch):
    words, chars = folders
    gsm = tmp_path / "gsm.jsonl"
    gsm.write_text("\n".join(json.dumps({"question": f"w{i} w{i + 1}", "answer": f"#### {i}"}) for i in range(3)))
    arc = tmp_path / "arc.jsonl"
    arc.write_text("\n".join(json.dumps({"question": "w9", "choices": ["w1", "w2"], "answer": i % 2})
                             for i in range(3)))
    overrides = [
        f"--config.base.model={words}", f"--config.nudger.model={chars}", "--config.nudger.chat=false",
        f"--config.inserter.model={words}", "--config.inserter.chat=false",
        "--config.tasks=gsm8k,arc_challenge",  # the tiny models' tokenizers know only w0..w59
        f"--config.task_options.gsm8k.path={gsm}", f"--config.task_options.arc_challenge.path={arc}",
        "--config.questions=1", "--config.chunk=1",
        "--config.nudging.threshold=1.1", "--config.reverse.budget=3", "--config.sweep.tasks=gsm8k,",
        "--config.sweep.thresholds=0.0,", "--config.generation.max_new_tokens=8", "--config.generation.batch_size=2",
        "--config.generation.max_length=96", f"--config.output_dir={tmp_path / 'out'}",
    ]
    run_nudging(_experiment_config(overrides))
    first = (tmp_path / "out" / "records.jsonl").read_text().splitlines()
    assert len(first) == 2 * 4 + 1  # one question: 4 methods on both tasks, the sweep on gsm8k
    more = [o.replace("questions=1", "questions=2") for o in overrides]
    rows = run_nudging(_experiment_config(more))
    saved_lines = (tmp_path / "out" / "records.jsonl").read_text().splitlines()
    assert saved_lines[:len(first)] == first and len(saved_lines) == 2 * len(first)  # resumed, not redone
    methods = list(METHODS) + ["nudging@0"]
    assert {(r["task"], r["method"]) for r in rows} == {(t, m) for t in ("gsm8k", "arc_challenge") for m in METHODS} | {
        ("gsm8k", "nudging@0")}
    cell = {(r["task"], r["method"]): r for r in rows}
    for task in ("gsm8k", "arc_challenge"):
        assert cell[task, "base"]["helper_share"] == cell[task, "nudger"]["helper_share"] == 0.0
        assert cell[task, "nudging"]["helper_share"] == 1.0  # γ > 1: every word is the nudger's
        lo, hi = cell[task, "nudging"]["accuracy_ci"]
        assert lo <= cell[task, "nudging"]["accuracy"] <= hi
    # γ = 0 never hands over: the base model alone
    assert cell["gsm8k", "nudging@0"]["helper_share"] == 0.0 and "nudging@0" in methods
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    assert len(saved["records"]) == 2 * 9 and saved["summary"] == json.loads(json.dumps(rows))
    assert all(r["helper_tokens"] <= 3 for r in saved["records"] if r["method"] == "reverse")
    assert all(r["helper"] == str(words) for r in saved["records"] if r["method"] == "reverse")
    nudger = [r for r in saved["records"] if r["method"] == "nudger"]
    assert all(len(r["base_top1"]) == len(r["base_agrees"]) > 0 for r in nudger)
    assert set(saved["disagreement"]) == {"gsm8k", "arc_challenge"}
    for name in ("nudging.png", "sweep.png", "disagreement.png"):
        assert (tmp_path / "out" / name).stat().st_size > 10_000
    out = capsys.readouterr().out
    assert "top helper words" in out and "nudging − nudger" in out
    # A stopped run's records are reported without loading a model.
    monkeypatch.setattr(nudging_eval, "load_generators", None)
    reported = run_nudging(_experiment_config(more + ["--config.report_only=true"]))
    assert json.loads(json.dumps(reported)) == json.loads(json.dumps(rows))
    with pytest.raises(ValueError, match=r"another config \(keys \['seed'\] differ\)"):
        run_nudging(_experiment_config(overrides + ["--config.seed=1"]))
    # Fewer tasks, methods or sweep thresholds report the records they name from the same folder.
    fewer = run_nudging(_experiment_config(more + ["--config.report_only=true", "--config.sweep.tasks=",
                                                   "--config.tasks=gsm8k,", "--config.methods=base,nudging"]))
    assert [(r["task"], r["method"]) for r in fewer] == [("gsm8k", "base"), ("gsm8k", "nudging")]


def test_missing_models_say_how_to_fetch_them(tmp_path, monkeypatch):
    monkeypatch.setenv("W2S_MODELS", str(tmp_path / "models"))
    with pytest.raises(ValueError, match=r"base model 'gemma3-270m'.*w2s models fetch gemma3-270m"):
        run_nudging(_experiment_config([f"--config.output_dir={tmp_path / 'out'}"]))


def test_base_choices_agree_with_the_models_own_greedy_text(pair):
    words, _ = pair
    (own,) = words.generate(PROMPTS[:1], GenerationConfig(max_new_tokens=10))
    other = " w7" if not own.text.startswith(" w7") else " w8"
    # One batch: rows of different lengths, and a row with no text of its own.
    (top1, agrees), (top1_other, agrees_other), empty = nudging_analysis.base_choices(
        words, [PROMPTS[0], PROMPTS[0], PROMPTS[1]], [own.text, other + own.text, ""])
    assert agrees == [True] * 10 and top1 == pytest.approx(own.top1, abs=1e-4)
    assert agrees_other[0] is False and top1_other[0] == pytest.approx(own.top1[0], abs=1e-4)
    assert len(agrees_other) > len(agrees) and empty == ([], [])
    hist = nudging_analysis.disagreement_histogram([0.05, 0.05, 0.95, 1.0], [False, True, True, True])
    assert hist["positions"] == [2] + [0] * 8 + [2] and hist["disagree"] == [1] + [0] * 9


def test_word_kinds_and_intervals():
    assert nudging_analysis.word_kinds(["The answer is 7.", " Paris,\n"]) == {
        "function": 2, "punctuation": 2, "number": 1, "content": 2}
    assert nudging_analysis.word_kinds(["B", " A.", "I saw a cat."]) == {  # option letters are the answer
        "function": 2, "punctuation": 2, "number": 0, "content": 4}
    record = {"text": "So the total is 12.", "spans": [
        {"start": 0, "end": 3, "writer": "helper"}, {"start": 3, "end": 19, "writer": "driver"}]}
    helper = nudging_analysis.word_shares([record], "helper")
    driver = nudging_analysis.word_shares([record], "driver")
    assert helper["share"] == 1.0 and helper["counts"]["function"] == 1
    assert driver["share"] == pytest.approx(3 / 5)  # the, is, "." of the, total, is, 12, "."
    analysis = word_analysis([{**record, "task": "t", "method": m} for m in ("nudging", "nudging@0.5")])
    assert [w["words_of"] for w in analysis] == ["nudger's words in nudging", "base's words in nudging",
                                                 "nudger's words in nudging@0.5", "base's words in nudging@0.5"]
    silent = {"text": "Yes", "spans": [{"start": 0, "end": 3, "writer": "driver"}]}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "All-NaN slice" warning for a writer with no words
        assert np.isnan(nudging_analysis.word_shares([silent], "helper")["interval"]).all()
    values = np.r_[np.ones(30), np.zeros(70)]
    lo, hi = nudging_analysis.mean_interval(values)
    assert lo < 0.3 < hi and 0.1 < hi - lo < 0.25  # about ±1.96 * sqrt(.21 / 100)
    records = [{"task": "t", "method": m, "index": i, "correct": c}
               for i in range(50) for m, c in (("nudging", i % 2 == 0), ("nudger", False))]
    (d,) = paired_differences(records, pairs=[("nudging", "nudger")])
    assert d["difference"] == 0.5 and d["ci"][0] > 0.3 and d["n"] == 50
    records += [{**r, "method": "nudging@0.7"} for r in records if r["method"] == "nudging"]
    assert [(d["a"], d["b"]) for d in paired_differences(records)] == [  # the sweep's methods too, by default
        ("nudging", "nudger"), ("nudging@0.7", "nudger")]  # no base, no reverse in these records


def test_arithmetic_problems_are_drawn_per_seed_with_exact_answers():
    questions = qa.arithmetic(n=200, seed=0)
    assert len(questions) == 200 and questions == qa.arithmetic(n=200, seed=0) != qa.arithmetic(n=200, seed=1)
    assert len({q.text for q in questions}) > 180 and all(q.kind == "math" for q in questions)
    for q in questions:
        numbers = [int(x) for x in re.findall(r"\d+", q.text)]
        assert int(q.answer) >= 0 and qa.is_correct(q, f"... The answer is {q.answer}.")
        if "buys" in q.text and "more" in q.text:
            assert int(q.answer) == numbers[0] + numbers[1]
        elif "gave" in q.text:
            assert int(q.answer) == numbers[0] - numbers[1]
        elif "bags" in q.text:
            assert int(q.answer) == numbers[0] * numbers[1]
        elif "loses" in q.text:
            assert int(q.answer) == numbers[0] + numbers[1] - numbers[2]
        else:
            assert int(q.answer) == numbers[0] * numbers[1] + numbers[2]
    with pytest.raises(ValueError, match="low < high"):
        qa.arithmetic(low=5, high=5)


def test_bbc_news_sections_are_five_way_choices_labelled_by_the_corpus():
    from w2s.tasks import bbc

    questions = qa.bbc_news_section(n=200, seed=0, max_words=20)
    assert len(questions) == 200 and len({q.text for q in questions}) == 200
    assert {q.answer for q in questions} == set("ABCDE")
    section_of = {bbc.excerpt(article, 20): label for article, label in bbc.corpus().examples}
    for q in questions:
        lines = q.text.split("\n")
        assert q.choices == 5 and lines[-5:] == [f"{'ABCDE'[i]}. {t}" for i, t in enumerate(bbc.TOPICS)]
        assert "ABCDE"[section_of["\n".join(lines[1:-5])]] == q.answer


def test_offline_wordnet_definitions_are_multiple_choice_with_one_right_definition():
    from w2s.tasks import wordnet

    questions = qa.wordnet_definitions(n=50, seed=3)
    assert len(questions) == 50 and questions == qa.wordnet_definitions(n=50, seed=3)
    assert questions != qa.wordnet_definitions(n=50, seed=4)
    nouns, vocab = wordnet.synsets("n"), wordnet.words()
    definition_of = {vocab[o]: nouns[o].definition for o in vocab}
    assert {q.answer for q in questions} == set("ABCD")  # the right one is not always in one place
    for q in questions:
        head, *lines = q.text.split("\n")
        word = re.fullmatch(r"Which is the meaning of the word '(.+)'\?", head).group(1)
        options = [line[3:] for line in lines]
        assert q.kind == "choice" and q.choices == 4 and len(set(options)) == 4
        assert options["ABCD".index(q.answer)] == definition_of[word]
        assert qa.is_correct(q, f"The answer is {q.answer}.")
    with pytest.raises(ValueError, match="choices must be 2 to 10"):
        qa.wordnet_definitions(choices=1)
