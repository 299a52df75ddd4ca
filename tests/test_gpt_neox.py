"""GPT-NeoX (Pythia) against transformers on tiny random checkpoints: hidden states with parallel and
sequential residuals and partial or full rotary, the classifier, greedy generation through the KV
cache, a tensor-parallel forward, and the Pythia ladder's rungs and parameter counts."""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
import torch
import transformers
from flax import nnx
from jax.sharding import PartitionSpec as P
from safetensors.numpy import load_file, save_file

from tests.test_generate import PROMPTS, WORDS, _hf_greedy
from tests.test_hub import write_word_tokenizer
from w2s import stages, sharding
from w2s.sweeps import ladders
from w2s.generation.generate import GenerationConfig, Generator
from w2s.models import TransformerConfig, build_backbone, build_classifier
from w2s.models.causal_lm import build_causal_lm
from w2s.models.gpt_neox import GPTNeoX
from w2s.models.layers import KVCache
from w2s.train import TrainConfig

VOCAB, EOS = 64, 1
# (use_parallel_residual, rotary_pct): Pythia's, and the other corners.
VARIANTS = [(True, 0.25), (False, 0.25), (True, 1.0), (False, 1.0)]
# Right-padded batch: lengths 7, 4 and 1.
IDS = np.array([[5, 17, 42, 8, 61, 3, 30], [12, 7, 7, 30, 0, 0, 0], [44, 0, 0, 0, 0, 0, 0]], np.int32)
MASK = (np.arange(7)[None] < np.array([[7], [4], [1]])).astype(np.int32)


def _tiny_config(parallel: bool, rotary_pct: float) -> transformers.GPTNeoXConfig:
    return transformers.GPTNeoXConfig(
        vocab_size=VOCAB, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
        max_position_embeddings=48, rotary_pct=rotary_pct, rotary_emb_base=500, use_parallel_residual=parallel,
        bos_token_id=EOS, eos_token_id=EOS, pad_token_id=0)


@pytest.fixture(scope="module")
def lms(tmp_path_factory):
    """variant -> (folder, torch GPTNeoXForCausalLM), saved with wide weights (HF's 0.02 init is
    nearly the identity) and a word-level tokenizer."""
    out = {}
    for parallel, rotary_pct in VARIANTS:
        torch.manual_seed(0)
        model = transformers.GPTNeoXForCausalLM(_tiny_config(parallel, rotary_pct)).eval()
        with torch.no_grad():
            for p in model.parameters():
                p.normal_(0.0, 0.3)
        folder = tmp_path_factory.mktemp(f"neox_{parallel}_{rotary_pct}")
        model.save_pretrained(folder)
        write_word_tokenizer(folder, WORDS)
        out[parallel, rotary_pct] = (folder, model)
    return out


def _torch_hidden(model: torch.nn.Module) -> np.ndarray:
    with torch.no_grad():
        out = model.gpt_neox(input_ids=torch.tensor(IDS).long(), attention_mask=torch.tensor(MASK))
    return out.last_hidden_state.numpy()


@pytest.mark.parametrize("variant", VARIANTS)
def test_hidden_states_match_transformers(lms, variant):
    folder, model = lms[variant]
    backbone = build_backbone(str(folder))
    assert (backbone.cfg.parallel_residual, backbone.cfg.rotary_fraction) == variant
    assert backbone.cfg.rotary_dim == int(16 * variant[1]) and backbone.cfg.rope_theta == 500
    ours = np.asarray(backbone(jnp.asarray(IDS), jnp.asarray(MASK)))
    real = MASK.astype(bool)  # padded query rows hold garbage in both
    assert np.abs(ours - _torch_hidden(model))[real].max() <= 1e-5


def test_classifier_loads_pythia_checkpoints_with_their_buffers(lms, tmp_path):
    """Pythia's checkpoints also hold causal-mask and inv_freq buffers; they are skipped."""
    folder, model = lms[True, 0.25]
    tensors = load_file(folder / "model.safetensors")
    tensors["gpt_neox.layers.0.attention.bias"] = np.tril(np.ones((1, 1, 48, 48), bool))
    tensors["gpt_neox.layers.0.attention.masked_bias"] = np.array(-1e9, np.float32)
    tensors["gpt_neox.layers.0.attention.rotary_emb.inv_freq"] = np.ones(2, np.float32)
    save_file(tensors, tmp_path / "model.safetensors")
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        (tmp_path / name).write_text((folder / name).read_text())
    clf, tokenizer = build_classifier(str(tmp_path))
    assert clf.pooling == "last" and tokenizer.padding_side == "right" and tokenizer.pad_token == "<|endoftext|>"
    features = np.asarray(clf.features(jnp.asarray(IDS), jnp.asarray(MASK)))
    last = _torch_hidden(model)[np.arange(3), MASK.sum(1) - 1]
    np.testing.assert_allclose(features, last, atol=1e-5)


@pytest.mark.parametrize("variant", [(True, 0.25), (False, 1.0)])
def test_greedy_generation_matches_transformers_through_the_cache(lms, variant):
    folder, torch_model = lms[variant]
    model, _ = build_causal_lm(str(folder))
    with torch.no_grad():
        ref = torch_model(input_ids=torch.tensor(IDS).long(), attention_mask=torch.tensor(MASK)).logits.numpy()
    full = np.asarray(model(jnp.asarray(IDS), jnp.asarray(MASK)))
    assert np.abs(full - ref)[MASK.astype(bool)].max() <= 1e-4  # embed_out is the LM head
    # A 3-token prefill, then one token at a time, gives the full forward's logits.
    cache = KVCache.empty(model.cfg, 3, 16, jnp.float32)
    logits, cache = model.extend(jnp.asarray(IDS[:, :3]), jnp.asarray(MASK[:, :3]), cache)
    np.testing.assert_allclose(logits, full[np.arange(3), np.minimum(MASK.sum(1), 3) - 1], atol=1e-4)
    for t in range(3, 7):
        logits, cache = model.extend(jnp.asarray(IDS[:, t:t + 1]), jnp.asarray(MASK[:, t:t + 1]), cache)
        for b in np.flatnonzero(MASK[:, t]):
            np.testing.assert_allclose(logits[b], full[b, t], atol=1e-4)

    gen = Generator(model, None, rows=len(PROMPTS), max_length=32, eos_ids=[EOS])
    got = [c.token_ids for c in gen.generate_ids(PROMPTS, GenerationConfig(max_new_tokens=12))]
    assert got == _hf_greedy(torch_model, PROMPTS, 12, EOS)


def test_tensor_parallel_forward_equals_one_device():
    cfg = TransformerConfig.from_hf(_tiny_config(True, 0.25).to_dict())
    cfg = dataclasses.replace(cfg, hidden_size=128, head_dim=32, intermediate_size=512)  # q/k/v past min_size
    model = GPTNeoX(cfg, rngs=nnx.Rngs(0))
    ids, mask = np.tile(IDS[:2], (2, 1)), np.tile(MASK[:2], (2, 1))
    expected = np.asarray(model(jnp.asarray(ids), jnp.asarray(mask)))

    mesh = sharding.make_mesh(data=2, fsdp=2, model=2)
    graphdef, params = nnx.split(model)
    shardings = sharding.state_shardings(mesh, params)
    layer = shardings["layers"][0]
    for column in (layer["attn"]["query"], layer["attn"]["value"], layer["mlp_in"]):  # heads, MLP hidden
        assert column["kernel"].spec == P("fsdp", "model")
    for row in (layer["attn"]["out"], layer["mlp_out"]):
        assert row["kernel"].spec == P("model", "fsdp")
    params = jax.device_put(params, shardings)
    batch = sharding.batch_sharding(mesh)
    forward = jax.jit(lambda p, i, m: nnx.merge(graphdef, p)(i, m), out_shardings=sharding.replicated(mesh))
    got = forward(params, jax.device_put(ids, batch), jax.device_put(mask, batch))
    np.testing.assert_allclose(np.asarray(got)[mask.astype(bool)], expected[mask.astype(bool)], atol=1e-5)


# Pythia's hub config.json files (old rotary_* names): hidden size, layers, heads, vocabulary.
PYTHIA = {
    "pythia-70m": (512, 6, 8, 50304), "pythia-160m": (768, 12, 12, 50304), "pythia-410m": (1024, 24, 16, 50304),
    "pythia-1b": (2048, 16, 8, 50304), "pythia-1.4b": (2048, 24, 16, 50304),
    "pythia-2.8b": (2560, 32, 32, 50304), "pythia-6.9b": (4096, 32, 32, 50432),
}


def test_pythia_ladder_resolves_to_specs_and_counts_its_parameters():
    assert ladders.ladder("pythia") == tuple(PYTHIA)
    train = ml_collections.ConfigDict(dataclasses.asdict(TrainConfig()))
    for label, (hidden, num_layers, heads, vocab) in PYTHIA.items():
        rung = ladders.rung(label)
        assert ladders.family(label) == "pythia" and rung.model == f"EleutherAI/{label}"
        spec = stages.ModelSpec.from_config(rung.spec(train))
        assert spec.settings.model == rung.model and spec.train_cfg.lr == dict(rung.train)["lr"]
        cfg = TransformerConfig.from_hf(dict(
            model_type="gpt_neox", vocab_size=vocab, hidden_size=hidden, num_hidden_layers=num_layers,
            num_attention_heads=heads, intermediate_size=4 * hidden, max_position_embeddings=2048,
            rotary_pct=0.25, rotary_emb_base=10000, rope_scaling=None, use_parallel_residual=True,
            tie_word_embeddings=False, hidden_act="gelu", layer_norm_eps=1e-5))
        assert cfg.rotary_dim == hidden // heads // 4 and cfg.parallel_residual and cfg.activation == "gelu"
        # Layers are alike, so 0 and 1 layers give the count (tracing 32 layers takes seconds).
        base, one = (_param_count(dataclasses.replace(cfg, num_layers=n)) for n in (0, 1))
        count = base + num_layers * (one - base)
        assert count + vocab * hidden == rung.params, label  # the card's total counts embed_out too


def _param_count(cfg: TransformerConfig) -> int:
    backbone = nnx.eval_shape(lambda: GPTNeoX(cfg, rngs=nnx.Rngs(0)))
    return sum(x.size for x in jax.tree.leaves(nnx.state(backbone, nnx.Param)))
