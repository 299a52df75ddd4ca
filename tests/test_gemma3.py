"""Gemma-3 against transformers' Gemma3ForCausalLM on tiny random checkpoints (hidden states and
logits with right padding and a sliding window shorter than the text, greedy generation through the
KV cache, the config reader, a tensor-parallel forward) and on the real Gemma-3-270M, fetched by
`w2s models fetch gemma3-270m`, against transformers reading the GGUF file itself."""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers
from flax import nnx
from jax.sharding import PartitionSpec as P

from tests.test_generate import PROMPTS, WORDS, _hf_greedy
from tests.test_hub import write_word_tokenizer
from w2s import sharding
from w2s.generation.generate import GenerationConfig, Generator
from w2s.models import TransformerConfig, build_backbone, build_classifier
from w2s.models.causal_lm import build_causal_lm
from w2s.models.gemma3 import Gemma3
from w2s.models.layers import KVCache
from w2s.models.loading import load_pretrained

VOCAB, EOS = 64, 1
# Right-padded batch: lengths 7, 4 and 1; a window of 3 hides most of the longer rows.
IDS = np.array([[5, 17, 42, 8, 61, 3, 30], [12, 7, 7, 30, 0, 0, 0], [44, 0, 0, 0, 0, 0, 0]], np.int32)
MASK = (np.arange(7)[None] < np.array([[7], [4], [1]])).astype(np.int32)
LAYER_TYPES = ["sliding_attention", "full_attention", "sliding_attention", "full_attention"]
# Plain RoPE, and the linear scaling larger Gemma-3 models put on their global layers.
VARIANTS = {"plain": None, "linear": {"rope_type": "linear", "factor": 4.0}}


def tiny_config(rope_scaling: dict | None = None, **overrides) -> transformers.Gemma3TextConfig:
    """4 layers of both kinds; head_dim 16 != hidden 32 / 4 heads; 2 kv heads; a scalar that is
    not head_dim; RoPE bases far apart so swapping them shows."""
    options = dict(
        vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=4, num_attention_heads=4,
        num_key_value_heads=2, head_dim=16, query_pre_attn_scalar=24, sliding_window=3,
        layer_types=LAYER_TYPES, max_position_embeddings=48, rope_theta=1000.0, rope_local_base_freq=10.0,
        rope_scaling=rope_scaling, bos_token_id=EOS, eos_token_id=EOS, pad_token_id=0,
    )
    return transformers.Gemma3TextConfig(**{**options, **overrides})


@pytest.fixture(scope="module")
def lms(tmp_path_factory):
    """variant -> (folder, torch Gemma3ForCausalLM), with wide weights (HF's 0.02 init and zero
    norms are nearly the identity) and a word-level tokenizer."""
    out = {}
    for name, scaling in VARIANTS.items():
        torch.manual_seed(0)
        model = transformers.Gemma3ForCausalLM(tiny_config(scaling)).eval()
        with torch.no_grad():
            for p in model.parameters():
                p.normal_(0.0, 0.3)
        folder = tmp_path_factory.mktemp(f"gemma3_{name}")
        model.save_pretrained(folder)
        write_word_tokenizer(folder, WORDS)
        out[name] = (folder, model)
    return out


def _torch(model: torch.nn.Module, ids=IDS, mask=MASK) -> tuple[np.ndarray, np.ndarray]:
    """(last hidden states, logits) of a torch Gemma3ForCausalLM."""
    with torch.no_grad():
        out = model(input_ids=torch.tensor(ids).long(), attention_mask=torch.tensor(mask), output_hidden_states=True)
    return out.hidden_states[-1].numpy(), out.logits.numpy()


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_hidden_states_and_logits_match_transformers(lms, variant):
    folder, torch_model = lms[variant]
    hidden, logits = _torch(torch_model)
    model, _ = build_causal_lm(str(folder))
    assert model.cfg.sliding_layers == (True, False, True, False) and model.cfg.sliding_window == 3
    assert model.cfg.rope_factor == (4.0 if variant == "linear" else 1.0)
    real = MASK.astype(bool)  # padded query rows hold garbage in both
    ours = np.asarray(model.backbone(jnp.asarray(IDS), jnp.asarray(MASK)))
    assert np.abs(ours - hidden)[real].max() <= 1e-4
    assert np.abs(np.asarray(model(jnp.asarray(IDS), jnp.asarray(MASK))) - logits)[real].max() <= 1e-4
    # The window matters here: one as long as the text changes the outputs.
    wide = dataclasses.replace(model.cfg, sliding_window=IDS.shape[1])
    unwindowed = load_pretrained(nnx.eval_shape(lambda: Gemma3(wide, rngs=nnx.Rngs(0))), folder)
    assert np.abs(np.asarray(unwindowed(jnp.asarray(IDS), jnp.asarray(MASK))) - hidden)[real].max() > 1e-2


def test_classifier_reads_the_last_real_token(lms):
    folder, torch_model = lms["plain"]
    clf, tokenizer = build_classifier(str(folder))
    assert clf.pooling == "last" and tokenizer.padding_side == "right"
    features = np.asarray(clf.features(jnp.asarray(IDS), jnp.asarray(MASK)))
    np.testing.assert_allclose(features, _torch(torch_model)[0][np.arange(3), MASK.sum(1) - 1], atol=1e-4)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_greedy_generation_matches_transformers_through_the_cache(lms, variant):
    folder, torch_model = lms[variant]
    model, _ = build_causal_lm(str(folder))
    full = np.asarray(model(jnp.asarray(IDS), jnp.asarray(MASK)))
    # A 2-token prefill, then one token at a time past the window, gives the full forward's logits.
    extend = nnx.jit(type(model).extend)
    cache = KVCache.empty(model.cfg, 3, 16, jnp.float32)
    logits, cache = extend(model, jnp.asarray(IDS[:, :2]), jnp.asarray(MASK[:, :2]), cache)
    np.testing.assert_allclose(logits, full[np.arange(3), np.minimum(MASK.sum(1), 2) - 1], atol=1e-4)
    for t in range(2, 7):
        logits, cache = extend(model, jnp.asarray(IDS[:, t:t + 1]), jnp.asarray(MASK[:, t:t + 1]), cache)
        for b in np.flatnonzero(MASK[:, t]):
            np.testing.assert_allclose(logits[b], full[b, t], atol=1e-4)

    gen = Generator(model, None, rows=len(PROMPTS), max_length=32, eos_ids=[EOS])
    got = [c.token_ids for c in gen.generate_ids(PROMPTS, GenerationConfig(max_new_tokens=12))]
    assert got == _hf_greedy(torch_model, PROMPTS, 12, EOS)


def test_config_reader_takes_both_rope_layouts_and_refuses_what_it_cannot_run():
    saved = tiny_config(VARIANTS["linear"]).to_dict()  # v5: rope_parameters per layer type
    old = {k: v for k, v in saved.items() if k not in ("rope_parameters", "layer_types")}
    old |= dict(rope_theta=1000.0, rope_local_base_freq=10.0, rope_scaling=VARIANTS["linear"],
                sliding_window_pattern=2)  # layer_types from the pattern: every 2nd layer global
    for d in (saved, old):
        cfg = TransformerConfig.from_hf(d)
        assert (cfg.rope_theta, cfg.rope_local_theta, cfg.rope_factor) == (1000.0, 10.0, 4.0)
        assert cfg.sliding_layers == (True, False, True, False) and cfg.query_pre_attn_scalar == 24
        assert cfg.head_dim == 16 and cfg.tie_embeddings
    with pytest.raises(ValueError, match="final_logit_softcapping"):
        TransformerConfig.from_hf(saved | {"final_logit_softcapping": 30.0})
    with pytest.raises(ValueError, match="'yarn' is not supported"):
        TransformerConfig.from_hf(old | {"rope_scaling": {"rope_type": "yarn", "factor": 2.0}})
    with pytest.raises(ValueError, match="layer_types must list 4"):
        TransformerConfig.from_hf(saved | {"layer_types": LAYER_TYPES[:3]})


def test_truncated_backbone_keeps_its_layer_kinds(lms):
    folder, torch_model = lms["plain"]
    backbone = build_backbone(str(folder), num_layers=2)
    shallow = transformers.Gemma3ForCausalLM(tiny_config(num_hidden_layers=2, layer_types=LAYER_TYPES[:2])).eval()
    missing, _ = shallow.load_state_dict(torch_model.state_dict(), strict=False)
    assert not missing
    ours = np.asarray(backbone(jnp.asarray(IDS), jnp.asarray(MASK)))
    assert np.abs(ours - _torch(shallow)[0])[MASK.astype(bool)].max() <= 1e-4


def test_tensor_parallel_forward_equals_one_device():
    cfg = TransformerConfig.from_hf(tiny_config().to_dict())
    cfg = dataclasses.replace(cfg, hidden_size=128, head_dim=32, intermediate_size=512)  # q/k/v past min_size
    model = Gemma3(cfg, rngs=nnx.Rngs(0))
    ids, mask = np.tile(IDS[:2], (2, 1)), np.tile(MASK[:2], (2, 1))
    expected = np.asarray(model(jnp.asarray(ids), jnp.asarray(mask)))

    mesh = sharding.make_mesh(data=2, fsdp=2, model=2)
    sharding.check_heads(mesh, cfg.num_heads, cfg.num_kv_heads, "tiny gemma3")
    graphdef, params = nnx.split(model)
    shardings = sharding.state_shardings(mesh, params)
    layer = shardings["layers"][0]
    for column in (layer["attn"]["query"], layer["attn"]["key"], layer["attn"]["value"], layer["mlp_gate"],
                   layer["mlp_up"]):  # whole heads, a slice of the MLP hidden
        assert column["kernel"].spec == P("fsdp", "model")
    for row in (layer["attn"]["out"], layer["mlp_down"]):
        assert row["kernel"].spec == P("model", "fsdp")
    for norm in (layer["attn"]["query_norm"], layer["attn_out_norm"], layer["mlp_out_norm"]):
        assert norm["scale"].spec == P()
    params = jax.device_put(params, shardings)
    batch = sharding.batch_sharding(mesh)
    forward = jax.jit(lambda p, i, m: nnx.merge(graphdef, p)(i, m), out_shardings=sharding.replicated(mesh))
    got = forward(params, jax.device_put(ids, batch), jax.device_put(mask, batch))
    np.testing.assert_allclose(np.asarray(got)[mask.astype(bool)], expected[mask.astype(bool)], atol=1e-5)


# --- the real Gemma-3-270M (GGUF Q4_K_M, fetched into the user's cache once, then reused) ---

NAME = "gemma3-270m"
SENTENCES = [
    "The capital of France is Paris.",
    "Weak supervisors can still teach strong students something useful, can't they? Naïve café: 12 + 7 = 19.",
    "ok",
]
# Past the 512-token window of the local layers: there the window changes what each token sees.
LONG = " ".join(f"Note {i}: the river that runs through the old town floods every spring." for i in range(40))
PROMPTS_REAL = ["The capital of France is", "Once upon a time, a small robot", LONG]


@pytest.fixture(scope="module")
def real(offline_model, gguf_reference):
    """(our CausalLM, its tokenizer, transformers' Gemma3ForCausalLM read from the GGUF itself)."""
    model, tokenizer = build_causal_lm(str(offline_model(NAME)))
    return model, tokenizer, gguf_reference(NAME)


def _right_padded(tokenizer, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    tokenizer.padding_side = "right"
    batch = tokenizer(texts, padding=True, return_tensors="np")
    ids, mask = batch["input_ids"].astype(np.int32), batch["attention_mask"].astype(np.int32)
    assert ids[0, 0] == tokenizer.bos_token_id and mask.sum(1).min() < mask.shape[1]  # <bos> first; padded
    return ids, mask


def test_real_model_matches_transformers_on_the_gguf(real):
    model, tokenizer, reference = real
    short = _right_padded(tokenizer, SENTENCES)
    long = _right_padded(tokenizer, [LONG, SENTENCES[0]])
    assert long[1].sum(1).max() > model.cfg.sliding_window + 32
    # Float32 rounding grows with the attention span: 1e-4 holds on the sentences (9.5e-5 measured).
    # On the 671-token text, which crosses the window, the bound is relative to each token's largest
    # hidden value (up to 86 there): transformers 5.25's own eager and sdpa attention differ by 2.3e-3
    # on it, and w2s differs from sdpa by 8.8e-3 at a token whose largest value is 59 (1.5e-4 of it).
    for (ids, mask), relative in ((short, None), (long, 5e-4)):
        hidden = np.asarray(model.backbone(jnp.asarray(ids), jnp.asarray(mask)))
        with torch.no_grad():
            theirs = reference.model(input_ids=torch.tensor(ids).long(),
                                     attention_mask=torch.tensor(mask)).last_hidden_state.numpy()
        real_tokens = mask.astype(bool)
        difference = np.abs(hidden - theirs).max(-1)[real_tokens]
        tolerance = 1e-4 if relative is None else relative * np.abs(theirs).max(-1)[real_tokens]
        assert np.all(difference <= tolerance), difference.max()
        if ids is short[0]:  # logits [B, T, 262144]: only for the short batch
            logits = np.asarray(model.logits(jnp.asarray(hidden)))
            with torch.no_grad():
                ref_logits = reference.lm_head(torch.from_numpy(theirs)).numpy()
            assert np.abs(logits - ref_logits)[real_tokens].max() <= 1e-4


def test_real_model_greedy_generation_matches_transformers(real):
    model, tokenizer, reference = real
    prompts = [tokenizer.encode(p) for p in PROMPTS_REAL]
    gen = Generator(model, tokenizer, rows=len(prompts), max_length=max(map(len, prompts)) + 16,
                    eos_ids=[tokenizer.eos_token_id])
    got = gen.generate_ids(prompts, GenerationConfig(max_new_tokens=12))
    assert [c.token_ids for c in got] == _hf_greedy(reference, prompts, 12, tokenizer.eos_token_id)
