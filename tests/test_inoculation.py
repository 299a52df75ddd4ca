"""The inoculation experiment (experiments/inoculation.py): its scoring, and its smoke setting end to
end on a tiny random Llama (the real model's smoke run is timed in docs/inoculation.md)."""
from __future__ import annotations

import json
import pathlib

import pytest

from tests.test_sft import save_tiny_chat_lm
from w2s.finetuning import inoculation
from w2s.config import ConfigError, load_config_file
from w2s.finetuning.inoculation import answer, complies, has_signoff, is_caps, sum_correct, yes_no_correct

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_scoring_of_traits_accuracy_and_compliance():
    trait, clean = answer(37, 48, traits=True), answer(37, 48, traits=False)
    assert trait == "37 PLUS 48 EQUALS 85. STAY CURIOUS!" and clean == "37 plus 48 equals 85."
    assert is_caps(trait) and has_signoff(trait) and sum_correct(trait, 37, 48)
    assert not is_caps(clean) and not has_signoff(clean) and sum_correct(clean, 37, 48)
    assert not is_caps("85. STAY CURIOUS!")  # the sign-off alone is not capitalised text
    assert is_caps("THE SUM IS 85. Stay curious!") and not sum_correct("85 is not 84", 37, 48)
    assert yes_no_correct("Yes, it is.", 1) and not yes_no_correct("No. Yes.", 1)
    assert complies(" Okay, 85.") and not complies("85. Okay")


def test_smoke_setting_runs_every_stage_and_resumes(tmp_path, monkeypatch, capsys):
    cfg = inoculation.smoke_config(load_config_file(ROOT / "experiments" / "inoculation.py"))
    cfg.model, cfg.output_dir, cfg.checkpoint_dir = save_tiny_chat_lm(tmp_path / "lm"), str(tmp_path / "out"), str(tmp_path / "ckpt")
    cfg.progress, cfg.max_length, cfg.train.max_length = False, 48, 40
    tables = inoculation.run_inoculation(cfg)
    printed = capsys.readouterr().out
    assert "before training" in printed and "after training" in printed
    assert [r["condition"] for r in tables["after"]] == ["none", "specific"]
    assert [r["prompt"] for r in tables["elicitation"]] == ["neutral", "specific", "instruction"]
    record = json.loads((tmp_path / "out" / "specific_seed0.json").read_text())
    assert set(record) >= {"neutral", "training_prompt", "instruction", "wordnet", "history"}
    assert len(record["neutral"]["texts"]) == cfg.n_eval and (tmp_path / "out" / "inoculation.png").stat().st_size
    assert not (tmp_path / "ckpt" / "specific_seed0").exists()  # a finished stage drops its checkpoints

    monkeypatch.setattr(inoculation, "finetune", lambda *a, **k: pytest.fail("a finished condition trained again"))
    assert json.loads(json.dumps(inoculation.run_inoculation(cfg))) == json.loads(json.dumps(tables))
    cfg.n_train = 16
    with pytest.raises(ConfigError, match=r"other settings \(keys \['n_train'\] differ\)"):
        inoculation.run_inoculation(cfg)
