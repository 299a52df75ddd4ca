"""Generation with a KV cache against transformers' PyTorch models on tiny random checkpoints."""
from __future__ import annotations

import json
import pathlib
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers
from flax import nnx

from w2s.generation.generate import GenerationConfig, Generator, top_p_filter
from w2s.models.causal_lm import build_causal_lm
from w2s.models.layers import KVCache

from tests.test_hub import write_word_tokenizer

WORDS = [f"w{i}" for i in range(60)]  # ids 2..61 after <unk> (0) and <|endoftext|> (1)
VOCAB = 64
EOS = 1
SMALL = dict(num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, intermediate_size=64,
             max_position_embeddings=48, bos_token_id=EOS, eos_token_id=EOS, pad_token_id=0)
CONFIGS = {
    "gpt2": lambda: transformers.GPT2Config(vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=4, n_positions=48,
                                            bos_token_id=EOS, eos_token_id=EOS, pad_token_id=0),
    "llama": lambda: transformers.LlamaConfig(vocab_size=VOCAB, hidden_size=32, **SMALL),  # untied lm_head
    "qwen2": lambda: transformers.Qwen2Config(vocab_size=VOCAB, hidden_size=32, tie_word_embeddings=True, **SMALL),
}
PROMPTS = [[5, 17, 42, 8, 61, 3, 30], [12, 7, 7], [44, 9, 21, 33, 2]]


def save_tiny_lm(folder, arch: str, seed: int = 0) -> torch.nn.Module:
    """A random causal LM with wide weights (HF's 0.02 init gives near-uniform, tie-prone
    logits) and a word-level tokenizer over WORDS, saved in HF format."""
    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(CONFIGS[arch]()).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.3)
    model.save_pretrained(folder)
    write_word_tokenizer(folder, WORDS)
    return model


@pytest.fixture(scope="module")
def lms(tmp_path_factory):
    """arch -> (folder, torch model, our CausalLM, tokenizer)."""
    out = {}
    for arch in CONFIGS:
        folder = tmp_path_factory.mktemp(arch)
        torch_model = save_tiny_lm(folder, arch)
        out[arch] = (folder, torch_model, *build_causal_lm(str(folder)))
    return out


def _hf_greedy(model, prompts, max_new_tokens, eos):
    """transformers' generate on a left-padded batch; each row cut after its eos."""
    width = max(map(len, prompts))
    ids = torch.tensor([[0] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens, do_sample=False,
                         pad_token_id=0, eos_token_id=eos)
    rows = out[:, width:].tolist()
    return [r[: r.index(eos) + 1] if eos in r else r for r in rows]


@pytest.mark.parametrize("arch", list(CONFIGS))
def test_greedy_matches_transformers_generate(lms, arch):
    _, torch_model, model, _ = lms[arch]
    gen = Generator(model, None, rows=len(PROMPTS), max_length=32, eos_ids=[EOS])
    got = [c.token_ids for c in gen.generate_ids(PROMPTS, GenerationConfig(max_new_tokens=12))]
    assert got == _hf_greedy(torch_model, PROMPTS, 12, EOS)
    # Again with an eos the first row does draw (its 4th token): rows stop at different steps.
    eos = got[0][3]
    gen = Generator(model, None, rows=len(PROMPTS), max_length=32, eos_ids=[eos])
    stopped = gen.generate_ids(PROMPTS, GenerationConfig(max_new_tokens=12))
    assert [c.token_ids for c in stopped] == _hf_greedy(torch_model, PROMPTS, 12, eos)
    assert stopped[0].reason == "eos" and stopped[0].token_ids[-1] == eos


@pytest.mark.parametrize("arch", list(CONFIGS))
def test_cached_logits_equal_full_forward_and_transformers(lms, arch):
    _, torch_model, model, _ = lms[arch]
    lengths = [len(p) for p in PROMPTS]
    ids = np.zeros((3, 7), np.int32)
    for b, p in enumerate(PROMPTS):
        ids[b, : len(p)] = p
    mask = (np.arange(7)[None] < np.array(lengths)[:, None]).astype(np.int32)
    full = np.asarray(nnx.jit(type(model).__call__)(model, jnp.asarray(ids), jnp.asarray(mask)))
    with torch.no_grad():
        ref = torch_model(input_ids=torch.tensor(ids).long(), attention_mask=torch.tensor(mask)).logits.numpy()
    assert np.abs(full - ref)[mask.astype(bool)].max() <= 1e-4

    # Prefill the first 2 tokens of every row (right-padded to 4), then one token at a time.
    extend = nnx.jit(type(model).extend)
    cache = KVCache.empty(model.cfg, 3, 16, jnp.float32)
    prefill = np.zeros((3, 4), np.int32)
    prefill[:, :2] = ids[:, :2]
    prefill_mask = np.zeros_like(prefill)
    prefill_mask[:, :2] = mask[:, :2]
    logits, cache = extend(model, jnp.asarray(prefill), jnp.asarray(prefill_mask), cache)
    np.testing.assert_allclose(logits, full[:, 1], atol=1e-4)
    for t in range(2, 7):
        step_mask = mask[:, t : t + 1]
        logits, cache = extend(model, jnp.asarray(ids[:, t : t + 1]), jnp.asarray(step_mask), cache)
        for b in np.flatnonzero(step_mask[:, 0]):
            np.testing.assert_allclose(logits[b], full[b, t], atol=1e-4)
    np.testing.assert_array_equal(cache.lengths, lengths)


def test_batch_equals_one_prompt_at_a_time(lms):
    model = lms["llama"][2]
    cfg = GenerationConfig(max_new_tokens=9)
    batch = Generator(model, None, rows=4, max_length=32).generate_ids(PROMPTS, cfg)
    assert len(batch) == 3
    single = Generator(model, None, rows=1, max_length=32)
    for prompt, got in zip(PROMPTS, batch):
        (alone,) = single.generate_ids([prompt], cfg)
        assert got.token_ids == alone.token_ids and got.top1 == pytest.approx(alone.top1, abs=1e-5)


def test_one_program_per_prompt_bucket_and_one_for_steps(lms):
    gen = Generator(lms["qwen2"][2], None, rows=3, max_length=32)
    gen.generate_ids(PROMPTS, GenerationConfig(max_new_tokens=10))
    gen.generate_ids([[4, 5], [6] * 8, None], GenerationConfig(max_new_tokens=6))
    assert gen._feed._cache_size() == 2  # prompts padded to 8, and the [B, 1] decode step
    gen.generate_ids([[7] * 9], GenerationConfig(max_new_tokens=3))  # shares no prefix with row 0
    assert gen._feed._cache_size() == 3  # a 16-token bucket


def test_cache_reuse_across_calls_gives_a_fresh_generators_tokens(lms):
    model = lms["llama"][2]
    cfg = GenerationConfig(max_new_tokens=6)
    gen = Generator(model, None, rows=2, max_length=32)
    first = gen.generate_ids(PROMPTS[:2], cfg)
    assert gen.held[0] == PROMPTS[0] + first[0].token_ids[:-1]  # the last drawn token is never fed
    # Row 0 grows by part of its own completion and a new token; row 1 sits out, then returns.
    grown = PROMPTS[0] + first[0].token_ids[:3] + [9]
    again = gen.generate_ids([grown, None], cfg)
    assert again[1] is None and gen.held[1] == PROMPTS[1] + first[1].token_ids[:-1]
    back = gen.generate_ids([grown, PROMPTS[1]], cfg)
    fresh = Generator(model, None, rows=2, max_length=32).generate_ids([grown, PROMPTS[1]], cfg)
    assert [c.token_ids for c in back] == [c.token_ids for c in fresh]
    assert again[0].token_ids == fresh[0].token_ids and back[1].token_ids == first[1].token_ids


def test_stop_strings_cut_the_text(lms):
    _, _, model, tokenizer = lms["llama"]
    gen = Generator(model, tokenizer, rows=2, max_length=32)
    prompts = ["w5 w17 w40", "w3 w3"]
    free = gen.generate(prompts, GenerationConfig(max_new_tokens=10))
    words = free[0].text.split()
    assert free[0].text == " " + " ".join(words) and len(words) == 10
    stop = " " + words[4]  # where it first occurs, the text is cut
    cut = free[0].text[: free[0].text.index(stop)]
    stopped = gen.generate(prompts, GenerationConfig(max_new_tokens=10, stop=(stop,)))
    assert stopped[0].text == cut and stopped[0].reason == "stop"
    assert len(stopped[0].token_ids) == len(cut.split()) + 1  # drawn up to the stop string's token
    assert stopped[1].text == free[1].text.split(stop)[0]
    one_word = gen.generate(prompts, GenerationConfig(max_new_tokens=10, stop_pattern=r"(?<=\S)\s"))
    assert [c.text for c in one_word] == [" " + words[0], " " + free[1].text.split()[0]]


def test_handoff_stops_before_the_first_unsure_token(lms):
    _, _, model, tokenizer = lms["qwen2"]
    gen = Generator(model, tokenizer, rows=3, max_length=32)
    free = gen.generate_ids(PROMPTS, GenerationConfig(max_new_tokens=12))
    gamma = float(np.median([p for c in free for p in c.top1]))
    out = gen.generate_ids(PROMPTS, GenerationConfig(max_new_tokens=12), handoff=lambda b, p, h: p < gamma)
    assert any(c.reason == "handoff" for c in out)
    for c, f in zip(out, free):
        accepted = len(c.token_ids)
        assert c.token_ids == f.token_ids[:accepted]
        assert min(c.top1[:accepted], default=1.0) >= gamma
        if c.reason == "handoff":
            assert len(c.top1) == accepted + 1 and c.top1[-1] < gamma


def test_sampling_is_seeded_and_top_p_matches_transformers(lms):
    model = lms["llama"][2]
    gen = Generator(model, None, rows=3, max_length=32)

    def run(**kw):
        return [c.token_ids for c in gen.generate_ids(PROMPTS, GenerationConfig(max_new_tokens=8, **kw))]

    hot = run(temperature=2.0, seed=1)
    assert hot == run(temperature=2.0, seed=1) and hot != run(temperature=2.0, seed=2)
    assert run(temperature=1.0, top_p=1e-6, seed=3) == run()  # the nucleus is the top token alone

    logits = np.random.default_rng(0).normal(size=(4, 50)).astype(np.float32) * 3
    for p in (0.1, 0.5, 0.9):
        ours = np.isfinite(np.asarray(top_p_filter(jnp.asarray(logits), p)))
        warper = transformers.TopPLogitsWarper(top_p=p)
        theirs = np.isfinite(warper(None, torch.tensor(logits)).numpy())
        np.testing.assert_array_equal(ours, theirs)


def test_lengths_are_checked(lms):
    model = lms["gpt2"][2]
    with pytest.raises(ValueError, match="exceeds the model's 48 positions"):
        Generator(model, None, rows=1, max_length=64)
    gen = Generator(model, None, rows=2, max_length=12)
    with pytest.raises(ValueError, match="1 to 11"):
        gen.generate_ids([[3] * 12], GenerationConfig())
    with pytest.raises(ValueError, match="3 prompts for a generator of 2 rows"):
        gen.generate_ids(PROMPTS, GenerationConfig())
    # A row is cut where the cache is full; the other row goes on to max_new_tokens.
    out = gen.generate_ids([[3] * 9, [4]], GenerationConfig(max_new_tokens=10))
    assert [(len(c.token_ids), c.reason) for c in out] == [(3, "length"), (10, "length")]
    assert all(np.isfinite(c.top1).all() for c in out)


def test_cache_dtype_follows_compute_dtype(lms):
    folder = lms["qwen2"][0]
    model, _ = build_causal_lm(str(folder), dtype=jnp.bfloat16)
    gen = Generator(model, None, rows=1, max_length=16)
    assert gen.cache.keys[0].dtype == jnp.bfloat16
    (out,) = gen.generate_ids([PROMPTS[0]], GenerationConfig(max_new_tokens=4))
    assert len(out.token_ids) == 4
    assert jax.tree.leaves(nnx.state(model, nnx.Param))[0].dtype == jnp.float32


def test_decode_benchmark_runs_both_sides_on_the_same_model(tmp_path, capsys):
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "benchmarks"))
    import decode

    path = tmp_path / "decode.json"
    out = decode.main(["--model", "tiny-gpt2", "--batch", "2", "--prompt-len", "8", "--new-tokens", "4",
                       "--rounds", "1", "--device", "cpu", "--json", str(path)])
    assert set(out["results"]) == {"jax", "torch"}
    assert all(r["tokens_per_s"] > 0 for r in out["results"].values()) and out["jax_over_torch"] > 0
    assert out["tokens_equal"] == 1.0  # same weights and prompts, greedy: the same tokens
    assert json.loads(path.read_text())["jax_over_torch"] == out["jax_over_torch"]
    assert "JAX/torch decode throughput" in capsys.readouterr().out
