"""The hub path, offline: a hub id resolves through the local Hugging Face cache, and a decoder
(GPT-2 architecture, last-token pooling, eos as pad) runs through the pipeline."""
import json

import huggingface_hub
import numpy as np
import pytest

from w2s import experiment
from w2s.models import build_classifier, resolve_model_dir

from tests.test_pipeline import small_config

transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")


def write_word_tokenizer(folder, words):
    """A whitespace word-level tokenizer in HF format, with GPT-2's convention: eos and no pad."""
    vocab = {"<unk>": 0, "<|endoftext|>": 1, **{w: i + 2 for i, w in enumerate(sorted(words))}}
    tok = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    tok.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast", "eos_token": "<|endoftext|>", "unk_token": "<unk>",
    }))
    return len(vocab)


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    """A Hugging Face cache holding 'acme/tiny-gpt2' (a random 2-layer GPT-2), with the hub offline."""
    from w2s.tasks import load_task

    words = {w for text, _ in load_task("wordnet_living", seed=0, n_train=64, n_test=32).train for w in text.split()}
    words |= {w for text, _ in load_task("wordnet_living", seed=0, n_train=64, n_test=32).test for w in text.split()}
    repo = tmp_path / "hub" / "models--acme--tiny-gpt2"
    snapshot = repo / "snapshots" / "0123456789abcdef"
    snapshot.mkdir(parents=True)
    vocab_size = write_word_tokenizer(snapshot, words)
    config = transformers.GPT2Config(vocab_size=vocab_size, n_embd=32, n_layer=2, n_head=2, n_positions=64)
    transformers.GPT2Model(config).save_pretrained(snapshot)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123456789abcdef")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    return snapshot


def test_hub_id_resolves_from_the_cache(hub_cache):
    assert resolve_model_dir("acme/tiny-gpt2") == hub_cache
    model, tokenizer = build_classifier("acme/tiny-gpt2")
    assert model.pooling == "last"
    assert tokenizer.pad_token == tokenizer.eos_token and tokenizer.padding_side == "right"


def test_uncached_hub_id_says_where_it_looked(hub_cache):
    with pytest.raises(ValueError, match="acme/other.*known: .*minilm.*hub"):
        resolve_model_dir("acme/other")


def test_decoder_runs_through_the_pipeline(tmp_path, hub_cache):
    cfg = small_config(tmp_path, "acme/tiny-gpt2", "--config.losses=xent,")
    (results,) = experiment.run_experiment(cfg)
    assert results["strong_model"] == "acme/tiny-gpt2"
    assert 0.0 <= results["accuracy"]["ceiling"] <= 1.0
    with np.load(tmp_path / "results" / "seed_0" / "weak_labels.npz") as f:
        assert np.isfinite(f["probs"]).all()
