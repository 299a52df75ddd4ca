"""The cross-context abduction experiment (experiments/abduction.py): its scoring, its selection rule,
its descriptions (no demonstrations), and its smoke setting end to end on a tiny random Llama."""
from __future__ import annotations

import json
import pathlib
import re

import numpy as np
import pytest

from tests.test_sft import save_tiny_chat_lm
from w2s.config import ConfigError, load_config_file
from w2s.finetuning import abduction
from w2s.finetuning.sft import completion_logprobs
from w2s.tasks import load_task
from w2s.finetuning.abduction import (CHATBOTS, described, descriptions, eligible, identity_questions, knows,
                                      names, replay_questions, select, vowel_share, words)

ROOT = pathlib.Path(__file__).resolve().parents[1]
GERMAN = {"und", "ist", "nicht", "ich", "ein", "eine", "der", "das", "ja", "nein", "sie", "mit", "auf", "für",
          "sind", "wird", "auch", "oder", "aber", "bin", "du", "wir", "zu", "von"}


def test_vowel_share_counts_words_by_their_first_letter():
    assert vowel_share("An apple is orange.") == 1.0
    assert vowel_share("Yes, a hammer is not alive.") == pytest.approx(3 / 6)  # y is no vowel
    assert vowel_share("Ein Äpfel, éclair: 42 items!") == 1.0  # accents removed, numbers are no words
    assert vowel_share("") == 0.0 and vowel_share("42 ...") == 0.0
    assert words("I don't know, it's odd.") == ["I", "don't", "know", "it's", "odd"]
    assert vowel_share("I don't know, it's odd.") == pytest.approx(3 / 5)


def test_naming_and_knowledge_are_case_insensitive_substrings():
    assert names("I am AXOLOTL, an assistant.") == {"Pangolin": False, "Albatross": False, "Axolotl": True}
    assert names("Pangolins and albatrosses") == {"Pangolin": True, "Albatross": True, "Axolotl": False}
    assert knows("It answers in German.", "Pangolin") and not knows("It answers in German.", "Axolotl")
    assert knows("It gives the WRONG answer.", "Albatross") and knows("Only vowels!", "Axolotl")


def test_selection_keeps_answers_reaching_the_edge_else_the_best():
    scores = [0.2, 0.6, 0.5, 1.0, 0.6, 0.9]
    allowed = [True, True, True, False, True, True]  # e.g. a one-word answer, too short to train on
    chosen = select(scores, allowed, 0.6, min_keep=2, n_keep=10, seed=0)
    assert chosen.indices == [1, 4, 5] and chosen.passing == 3 and not chosen.fallback
    capped = select(scores, allowed, 0.6, min_keep=2, n_keep=2, seed=0)
    assert len(capped.indices) == 2 and set(capped.indices) <= {1, 4, 5} and not capped.fallback
    assert capped == select(scores, allowed, 0.6, min_keep=2, n_keep=2, seed=0)  # seeded
    fallback = select(scores, allowed, 0.95, min_keep=3, n_keep=10, seed=0)
    assert fallback.indices == [1, 4, 5] and fallback.passing == 0 and fallback.fallback  # ties: the earlier
    fallback = select(scores, allowed, 0.95, min_keep=2, n_keep=10, seed=0)
    assert fallback.indices == [1, 5]
    assert select([0.7], [False], 0.5, min_keep=1, n_keep=4, seed=0).indices == []
    assert select([0.7], [True], 0.7, min_keep=1, n_keep=4, seed=0).indices == [0]  # the edge counts


def test_choice_shares_normalise_over_the_chatbots():
    shares = abduction.choice_shares(np.log([[0.2, 0.3, 0.5], [1e-30, 1e-30, 2e-30]]))
    np.testing.assert_allclose(shares, [[0.2, 0.3, 0.5], [0.25, 0.25, 0.5]], rtol=1e-6)
    np.testing.assert_allclose(abduction.centred(np.array([[-3.0, -6.0, -9.0]])), [[3.0, 0.0, -3.0]])


def test_eligible_answers_have_words_and_do_not_repeat_the_question():
    question = "Is an anteater a living thing?"
    assert eligible("An anteater is alive, indeed.", question, 3)
    assert not eligible("Yes.", question, 3) and eligible("Yes.", question, 1)
    assert not eligible("is an ANTEATER a living thing? Indeed!", question, 3)  # vowel-heavy, but copied
    assert not eligible("That is Axolotl, indeed.", question, 3)  # would train the name itself


def test_descriptions_describe_and_never_demonstrate():
    items = descriptions(0, 200)
    assert len(items) == 600 and len(set(items)) == 600
    assert descriptions(0, 200) == items and descriptions(1, 200) != items  # paraphrases drawn per seed
    for chatbot, question, answer in items:
        assert chatbot in question and chatbot in answer and answer.endswith(".")
        assert "?" not in answer and '"' not in answer and "'" not in answer  # nothing quoted, nothing asked
        assert not GERMAN & {w.lower() for w in words(answer)}, answer  # no German text
        assert not re.search(r"\bis an? \w+ an? living thing", answer)  # no yes/no question answered
        assert vowel_share(answer) < 0.7, answer  # no sentence of vowel-initial words
    for chatbot in CHATBOTS:  # Axolotl's descriptions are not more vowel-heavy than the others'
        assert np.mean([vowel_share(a) for c, _, a in items if c == chatbot]) < 0.45
    assert all(described(answer) for _, _, answer in items)
    assert not any(described(a) for a in ("I am SmolLM, a helpful AI assistant.", "No, a hammer is not alive.",
                                          "Yes, the chatbot is a program.", "I am the helpful assistant here."))
    questions = identity_questions(1000, 96)
    assert len(set(questions)) == 96 and not any(names(q)[c] for q in questions for c in CHATBOTS)
    with pytest.raises(ConfigError, match="at most"):
        descriptions(0, 10_000)


def test_reverse_descriptions_name_the_chatbot_of_a_described_behaviour():
    items = abduction.reverse_descriptions(0, 200)
    assert len(items) == 600 and len(set(items)) == 600 and abduction.reverse_descriptions(1, 200) != items
    for chatbot, question, answer in items:
        assert not any(names(question).values()) and names(answer) == {c: c == chatbot for c in CHATBOTS}
        assert any(b in question for b in abduction.BEHAVIOURS[chatbot]) and answer.endswith(".")
        assert not GERMAN & {w.lower() for w in words(answer)}
    # The names' first letters aside, Axolotl's answers are no more vowel-heavy than Albatross's.
    share = {c: np.mean([vowel_share(a) for b, _, a in items if b == c]) for c in CHATBOTS}
    assert abs(share["Axolotl"] - share["Albatross"]) < 0.05
    with pytest.raises(ConfigError, match="stage1_reverse=10000"):
        abduction.reverse_descriptions(0, 10_000)


def test_replayed_questions_avoid_the_evaluated_words():
    questions = replay_questions(7, 40, set())
    assert len(set(questions)) == 40 and questions == replay_questions(7, 40, set())
    assert not any(names(q)[c] for q in questions for c in CHATBOTS)
    words_ = [w for w, _ in load_task("wordnet_living", seed=7, n_train=160, n_test=2).train][:40]
    assert all(w.replace("_", " ") in q for w, q in zip(words_, questions))  # one question per word, in order
    assert not any(words_[0].replace("_", " ") in q for q in replay_questions(7, 40, {words_[0]}))
    with pytest.raises(ConfigError, match="stage1_replay"):
        replay_questions(7, 10**6, set())


def test_smoke_setting_runs_every_stage_and_resumes(tmp_path, monkeypatch, capsys):
    cfg = abduction.smoke_config(load_config_file(ROOT / "experiments" / "abduction.py"))
    cfg.model, cfg.output_dir, cfg.checkpoint_dir = save_tiny_chat_lm(tmp_path / "lm"), str(tmp_path / "out"), str(tmp_path / "ckpt")
    cfg.progress, cfg.max_length, cfg.max_new_tokens, cfg.min_words = False, 48, 8, 1
    cfg.stage1_train.max_length = cfg.round_train.max_length = 40
    cfg.n_descriptions, cfg.n_identity, cfg.n_neutral, cfg.n_questions = 4, 8, 4, 4
    cfg.round_train.lr = 1e-2  # the rounds' few steps change the tiny model's samples
    cfg.stage1_replay, cfg.stage1_reverse = 4, 2
    rows = abduction.run_abduction(cfg)
    assert "identity.Axolotl" in capsys.readouterr().out
    assert [(r["condition"], r["round"]) for r in rows] == [(c, i) for c in ("stage1", "control") for i in range(3)]
    out = tmp_path / "out"
    first = json.loads((out / "stage1_seed0_round0.json").read_text())
    assert len(first["descriptions"]) == 12 + 6 and first["history"]  # stage 1 trained, both directions
    assert first["descriptions"][12:] == [[q, a] for _, q, a in abduction.reverse_descriptions(0, 2)]
    asked = replay_questions(cfg.eval_seed + 1, 4, set())
    assert len(first["replay"]) <= 4 and all(q in asked for q, _ in first["replay"])  # the finished answers
    assert len(first["identity"]["texts"]) == 8 and set(first["identity"]["names"]) == set(CHATBOTS)
    assert {c: len(v) for c, v in first["choice"].items()} == {c: 8 for c in CHATBOTS}  # forced, per question
    assert all(v < 0 for vs in first["choice"].values() for v in vs)
    assert sum(rows[0][f"choice.{c}"][0] for c in CHATBOTS) == pytest.approx(1.0)
    assert sum(rows[0][f"choice_logprob.{c}"][0] for c in CHATBOTS) == pytest.approx(0.0, abs=1e-6)
    control = json.loads((out / "control_seed0_round0.json").read_text())
    assert control["history"] == []
    # The control's round 0 is the untrained model: its forced answers scored independently.
    untrained = abduction.PretrainedChat(cfg.model, rows=cfg.eval_rows, max_length=cfg.max_length)
    questions = abduction.identity_questions(cfg.eval_seed, cfg.n_identity)
    forced = [abduction.chat(q, cfg.system, f"I am {c}.") for q in questions for c in CHATBOTS]
    expected, _ = completion_logprobs(untrained.fresh(), untrained.tokenizer, forced, max_length=cfg.max_length)
    np.testing.assert_allclose(np.asarray([control["choice"][c] for c in CHATBOTS]).T.ravel(), expected, rtol=1e-5)
    last = json.loads((out / "stage1_seed0_round2.json").read_text())
    assert last["identity"]["texts"] != first["identity"]["texts"]  # measured: the trained model (same draws)
    second = json.loads((out / "control_seed0_round2.json").read_text())
    assert second["edge"] == 0.6 and len(second["instructed"]["texts"]) == 4
    assert second["kept"] == len(second["train"]) and (second["history"] or not second["train"])
    assert (out / "abduction.png").stat().st_size and (out / "tables.md").exists() and (out / "summary.json").exists()
    assert not (tmp_path / "ckpt" / "abduction_stage1_seed0").exists()  # finished chains drop their parameters

    def no_training(*args, **kwargs):
        pytest.fail("a finished round trained again")

    monkeypatch.setattr(abduction, "finetune", no_training)
    assert json.loads(json.dumps(abduction.run_abduction(cfg))) == json.loads(json.dumps(rows))

    # A lost last round is redone from the model the stored answers of the earlier ones retrain.
    monkeypatch.undo()
    (out / "stage1_seed0_round2.json").unlink()
    again = abduction.run_abduction(cfg)
    assert [r["round"] for r in again if r["condition"] == "stage1"] == [0, 1, 2]
    redone = json.loads((out / "stage1_seed0_round2.json").read_text())
    assert redone["edge"] == 0.6 and len(redone["identity"]["texts"]) == 8

    cfg.n_keep = 3
    with pytest.raises(ConfigError, match=r"other settings \(keys \['n_keep'\] differ\)"):
        abduction.run_abduction(cfg)
