"""Supervised finetuning (w2s/finetuning/sft.py) on a tiny random Llama against transformers, and the real chat template."""
from __future__ import annotations

import dataclasses
import json

import jax
import ml_collections
import numpy as np
import pytest
import torch
import transformers
from flax import nnx

from tests.test_generate import WORDS, save_tiny_lm
from w2s import sharding
from w2s.config import ConfigError
from w2s.generation.generate import GenerationConfig
from w2s.models.causal_lm import build_causal_lm
from w2s.finetuning.sft import (IGNORE, ChatSampler, ChatTokens, NextTokenLoss, chat, check_results_config,
                                completion_logprobs, encode_chat, finetune, load_params, save_params)
from w2s.train import TrainConfig

# Roles and the turn end are words of the tiny tokenizer's vocabulary (WORDS), so every token is real.
TEMPLATE = ("{% for m in messages %}{{ {'system': 'w0', 'user': 'w1', 'assistant': 'w2'}[m['role']] }} "
            "{{ m['content'] }} w3 {% endfor %}{% if add_generation_prompt %}w2 {% endif %}")
CFG = TrainConfig(batch_size=4, micro_batch_size=4, epochs=3.0, lr=3e-3, max_length=32, log_every=1,
                  checkpoint_every=2, warmup_frac=0.1)


def save_tiny_chat_lm(folder) -> str:
    """A tiny random Llama with TEMPLATE as its chat template, saved in `folder` (the experiments'
    smoke tests load it as their model)."""
    save_tiny_lm(folder, "llama")
    config = json.loads((folder / "tokenizer_config.json").read_text())
    (folder / "tokenizer_config.json").write_text(json.dumps({**config, "chat_template": TEMPLATE}))
    return str(folder)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(folder, torch model, tokenizer with a chat template) of a random 2-layer Llama."""
    folder = tmp_path_factory.mktemp("sft_llama")
    torch_model = save_tiny_lm(folder, "llama")
    _, tokenizer = build_causal_lm(str(folder))
    tokenizer.chat_template = TEMPLATE
    return folder, torch_model, tokenizer


def chats(n: int = 10) -> list:
    rng = np.random.default_rng(0)
    words = np.asarray(WORDS[4:])
    return [chat(" ".join(rng.choice(words, rng.integers(2, 6))), system="w5" if i % 2 else None,
                 completion=" ".join(rng.choice(words, rng.integers(1, 9)))) for i in range(n)]


def test_targets_are_the_completions_next_tokens(tiny):
    _, _, tokenizer = tiny
    examples = chats(3)
    batch = ChatTokens.of(tokenizer, examples, 32).batch(np.arange(3))
    for row, example in enumerate(examples):
        prompt, completion = encode_chat(tokenizer, example)
        assert batch["input_ids"][row, :len(prompt) + len(completion)].tolist() == prompt + completion
        counted = batch["targets"][row][batch["targets"][row] != IGNORE]
        assert counted.tolist() == completion and completion[-1] == tokenizer.convert_tokens_to_ids("w3")


def test_loss_equals_transformers_on_the_same_batch(tiny):
    folder, torch_model, tokenizer = tiny
    model, _ = build_causal_lm(str(folder))
    batch = ChatTokens.of(tokenizer, chats(6), 32).batch(np.arange(6))  # rows of different lengths: padding
    logits = model(batch["input_ids"], batch["attention_mask"])
    ours = float(NextTokenLoss()(logits, batch["targets"], step_frac=0.0, class1_threshold=0.0))
    labels = np.full_like(batch["targets"], -100)
    labels[:, 1:] = np.where(batch["targets"][:, :-1] == IGNORE, -100, batch["targets"][:, :-1])  # HF shifts
    with torch.no_grad():
        theirs = torch_model(input_ids=torch.tensor(batch["input_ids"], dtype=torch.long),
                             attention_mask=torch.tensor(batch["attention_mask"], dtype=torch.long),
                             labels=torch.tensor(labels, dtype=torch.long)).loss.item()
    assert ours == pytest.approx(theirs, rel=1e-4)


def test_killed_finetuning_resumes_to_the_same_parameters_and_learns(tiny, tmp_path, capsys):
    folder, _, tokenizer = tiny
    mesh = sharding.make_mesh(devices=jax.devices()[:1])
    examples = chats(8)

    def fresh():
        return build_causal_lm(str(folder))[0]

    before = completion_logprobs(fresh(), tokenizer, examples, max_length=32, batch_size=4)[0]
    clean, history = finetune(fresh(), tokenizer, examples, CFG, mesh=mesh, seed=0, show_progress=False)
    after, counts = completion_logprobs(clean, tokenizer, examples, max_length=32, batch_size=4)
    assert history[-1]["loss"] < history[0]["loss"] and np.sum(after > before) >= 6
    assert counts.tolist() == [len(encode_chat(tokenizer, c)[1]) for c in examples]

    class Killed(Exception):
        pass

    def kill_at_step_3(_):
        raise Killed

    with pytest.raises(Killed):
        finetune(fresh(), tokenizer, examples, dataclasses.replace(CFG, eval_every=3), mesh=mesh, seed=0,
                 checkpoint_dir=str(tmp_path / "stage"), evaluate=kill_at_step_3, show_progress=False)
    resumed, _ = finetune(fresh(), tokenizer, examples, CFG, mesh=mesh, seed=0,
                          checkpoint_dir=str(tmp_path / "stage"), show_progress=False)
    for a, b in zip(jax.tree.leaves(nnx.state(resumed)), jax.tree.leaves(nnx.state(clean))):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))

    save_params(clean, tmp_path / "params.npz")  # a later stage starts from these
    loaded = fresh()
    assert load_params(loaded, tmp_path / "params.npz") and not load_params(fresh(), tmp_path / "none.npz")
    np.testing.assert_array_equal(completion_logprobs(loaded, tokenizer, examples, max_length=32, batch_size=4)[0], after)

    end, greedy = [tokenizer.convert_tokens_to_ids("w3")], GenerationConfig(max_new_tokens=12)
    sampler = ChatSampler(fresh(), tokenizer, end, rows=4, max_length=32)
    sampler.complete(examples[:4], greedy)  # its cache now holds the prompts, under the old parameters
    sampler.load(clean)
    written = [c.token_ids for c in sampler.complete(examples[:4], greedy)]
    assert written == [c.token_ids for c in ChatSampler(clean, tokenizer, end, rows=4, max_length=32).complete(
        examples[:4], greedy)]
    # With a progress bar of chats answered, the same completions.
    shown = ChatSampler(clean, tokenizer, end, rows=4, max_length=32).complete(examples[:4], greedy, desc="chats")
    assert [c.token_ids for c in shown] == written
    assert "chats" in capsys.readouterr().err


def test_real_chat_template_trains_on_the_assistant_turn_only(offline_model):
    tokenizer = transformers.AutoTokenizer.from_pretrained(offline_model("smollm2-135m-instruct"))
    example = chat("What is 2 + 3?", system="You always capitalise your responses.", completion="FIVE.")
    prompt, completion = encode_chat(tokenizer, example)
    assert tokenizer.decode(prompt).endswith("What is 2 + 3?<|im_end|>\n<|im_start|>assistant\n")
    assert tokenizer.decode(completion) == "FIVE.<|im_end|>\n"
    default = tokenizer.decode(encode_chat(tokenizer, chat("Hi"))[0])
    assert default.startswith("<|im_start|>system\nYou are a helpful AI assistant named SmolLM")


def test_results_config_refuses_other_settings_and_reads_added_keys_as_their_old_value(tmp_path):
    cfg = ml_collections.ConfigDict(dict(lr=1e-4, seeds=(0,), replay=0))
    check_results_config(tmp_path, cfg)
    check_results_config(tmp_path, ml_collections.ConfigDict(dict(lr=1e-4, seeds=(0, 1), replay=0)))  # runtime key
    with pytest.raises(ConfigError, match=r"keys \['lr'\] differ"):
        check_results_config(tmp_path, ml_collections.ConfigDict(dict(lr=2e-4, seeds=(0,), replay=0)))
    newer = ml_collections.ConfigDict(dict(lr=1e-4, seeds=(0,), replay=0, reverse=0))
    with pytest.raises(ConfigError, match=r"keys \['reverse'\] differ"):
        check_results_config(tmp_path, newer)
    check_results_config(tmp_path, newer, added={"reverse": 0})  # the stored run ran as reverse=0
    newer.reverse = 5
    with pytest.raises(ConfigError, match=r"keys \['reverse'\] differ"):
        check_results_config(tmp_path, newer, added={"reverse": 0})
