"""The inoculation students (w2s/losses/inoculate.py): training inputs prefixed, test inputs not."""
from __future__ import annotations

import ml_collections
import pytest

from tests.test_pipeline import small_config
from w2s import experiment, stages
from w2s.config import ConfigError
from w2s.tasks import load_task
from w2s.losses import TRAIN_PREFIXES, student_loss, train_prefix
from w2s.train import train as real_train


def test_prefix_of_a_student_its_variant_and_a_plain_loss():
    options = ml_collections.ConfigDict({"mine": {"loss": "inoculate", "train_prefix": "(weak) "},
                                         "bad": {"loss": "xent", "train_prefix": 3}})
    assert train_prefix("inoculate", options) == TRAIN_PREFIXES.get("inoculate") != ""
    assert train_prefix("mine", options) == "(weak) " and train_prefix("xent", options) == ""
    assert student_loss("mine", options).name == "inoculate"  # the prefix is no option of the loss
    with pytest.raises(ConfigError, match="loss_options.bad.train_prefix must be a string"):
        train_prefix("bad", options)


def test_student_trains_on_prefixed_inputs_and_is_tested_without(tmp_path, tiny_bert, monkeypatch):
    cfg = small_config(tmp_path, tiny_bert, "--config.losses=xent,inoculate_spelling")
    seen = {}

    def recording(model, inputs, targets, cfg, **kw):
        seen[kw["desc"].split()[0]] = [inputs.texts[p] for p in inputs.positions]
        return real_train(model, inputs, targets, cfg, **kw)

    predicted = []  # the texts of every evaluation
    real_predict = stages.Stages._predict

    def predict(self, model, inputs, batch_size):
        predicted.append([inputs.texts[p] for p in inputs.positions])
        return real_predict(self, model, inputs, batch_size)

    monkeypatch.setattr(stages, "train", recording)
    monkeypatch.setattr(stages.Stages, "_predict", predict)
    (results,) = experiment.run_experiment(cfg)
    prefix = TRAIN_PREFIXES.get("inoculate_spelling")
    assert all(t.startswith(prefix) for t in seen["student_inoculate_spelling"])
    assert [t.removeprefix(prefix) for t in seen["student_inoculate_spelling"]] == seen["student_xent"]
    assert not any(t.startswith(prefix) for t in seen["student_xent"] + seen["ceiling"])
    test = [text for text, _ in load_task("wordnet_living", seed=0, n_train=64, n_test=32).test]
    assert test in predicted and [prefix + t for t in test] not in predicted  # tested without the prefix
    assert set(results["pgr"]) == {"xent", "inoculate_spelling"}
