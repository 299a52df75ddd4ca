"""A model family added in this file alone: one registration, and w2s reads its config.json, loads its
checkpoint (inside a task wrapper's prefix), trains a classifier on it sharded over a model axis of 2
as on one device, and generates with it through the KV cache as without."""
from __future__ import annotations

import functools
import json
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.sharding import PartitionSpec as P
from safetensors.numpy import load_file, save_file

from tests.test_hub import write_word_tokenizer
from tests.test_train import CFG, losses_of, run, toy_data
from w2s import sharding
from w2s.generation.generate import GenerationConfig, Generator
from w2s.models import build_classifier, layers
from w2s.models.causal_lm import build_causal_lm
from w2s.models.config import TransformerConfig
from w2s.models.family import FAMILIES, MODEL_TYPES, parallel_modules, register_family
from w2s.models.loading import NameMap, linear_names, norm_names, unchanged
from w2s.train import predict_logits

VOCAB = 512  # tests.test_train.toy_data's ids


def read_config(d: dict[str, Any]) -> TransformerConfig:
    width, heads = d["width"], d["heads"]
    return TransformerConfig(arch="toy", vocab_size=d["vocab_size"], hidden_size=width, num_layers=d["depth"],
                             num_heads=heads, num_kv_heads=heads, head_dim=width // heads,
                             intermediate_size=2 * width, max_position=d["positions"], norm_eps=1e-6,
                             activation="silu", tie_embeddings=True)


def checkpoint_names(cfg: TransformerConfig) -> NameMap:
    m: NameMap = {("token_embed", "embedding"): ("embed.weight", unchanged),
                  **norm_names(("final_norm",), "norm", bias=False)}
    for i in range(cfg.num_layers):
        ours, theirs = ("layers", i), f"blocks.{i}"
        for name in ("query", "key", "value", "out"):
            m |= linear_names(ours + ("attn", name), f"{theirs}.{name[0]}", bias=False)
        m |= norm_names(ours + ("attn_norm",), f"{theirs}.norm1", bias=False)
        m |= norm_names(ours + ("mlp_norm",), f"{theirs}.norm2", bias=False)
        m |= linear_names(ours + ("widen",), f"{theirs}.widen")
        m |= linear_names(ours + ("narrow",), f"{theirs}.narrow")
    return m


class ToyBlock(layers.RotaryBlock):
    def __init__(self, cfg: TransformerConfig, *, dtype: Any, param_dtype: Any, rngs: nnx.Rngs):
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        norm = functools.partial(nnx.RMSNorm, cfg.hidden_size, epsilon=cfg.norm_eps, **kw)
        self.attn_norm, self.mlp_norm = norm(), norm()
        self.attn = layers.Attention(cfg, out_bias=False, **kw)
        self.widen = layers.dense(cfg.hidden_size, cfg.intermediate_size, bias=True, **kw)
        self.narrow = layers.dense(cfg.intermediate_size, cfg.hidden_size, bias=True, **kw)

    def combine(self, x: jax.Array, attn: jax.Array) -> jax.Array:
        x = x + attn
        return x + self.narrow(nnx.silu(self.widen(self.mlp_norm(x))))


@register_family("toy", model_types=("w2s_toy",), read_config=read_config, checkpoint_names=checkpoint_names,
                 prefixes=("toy.",), pooling="last", column_parallel=("query", "key", "value", "widen"),
                 row_parallel=("out", "narrow"))
class Toy(layers.RotaryDecoder):
    block = ToyBlock
    norm = nnx.RMSNorm


@pytest.fixture(scope="module")
def toy_folder(tmp_path_factory):
    """A random toy checkpoint as a task wrapper would save it ("toy." before every name), with a
    word-level tokenizer."""
    folder = tmp_path_factory.mktemp("toy")
    hf = dict(model_type="w2s_toy", vocab_size=VOCAB, width=64, heads=4, depth=2, positions=32)
    (folder / "config.json").write_text(json.dumps(hf))
    cfg = read_config(hf)
    rng = np.random.default_rng(0)
    ours = nnx.to_flat_state(nnx.state(nnx.eval_shape(lambda: Toy(cfg, rngs=nnx.Rngs(0)))))
    shapes = {path: var.get_value().shape for path, var in ours}
    # Each conversion is its own inverse (a transpose or nothing), so it also writes the checkpoint.
    tensors = {f"toy.{name}": np.ascontiguousarray(convert(rng.normal(0, 0.3, shapes[path]).astype(np.float32)))
               for path, (name, convert) in checkpoint_names(cfg).items()}
    save_file(tensors, folder / "model.safetensors")
    write_word_tokenizer(folder, [f"w{i}" for i in range(20)])
    return folder


def test_the_family_is_registered_from_its_file_alone():
    family = FAMILIES.get("toy")
    assert MODEL_TYPES.get("w2s_toy") is family and family.backbone is Toy and family.decoder
    assert not FAMILIES.get("bert").decoder
    assert {"widen", "narrow"} <= set().union(*parallel_modules())


def test_toy_classifier_loads_trains_and_shards_over_the_model_axis(toy_folder):
    model, _ = build_classifier(str(toy_folder))
    assert model.pooling == "last"  # the family's default
    stored = load_file(toy_folder / "model.safetensors")["toy.blocks.1.widen.weight"]
    np.testing.assert_array_equal(model.backbone.layers[1].widen.kernel.get_value(), stored.T)

    one = sharding.make_mesh(devices=jax.devices()[:1])
    split = sharding.make_mesh(data=4, fsdp=1, model=2)
    trained_1, history_1 = run(one, CFG, model=build_classifier(str(toy_folder))[0])
    trained_2, history_2 = run(split, CFG, model=build_classifier(str(toy_folder))[0])
    np.testing.assert_allclose(losses_of(history_2), losses_of(history_1), rtol=2e-4, atol=2e-4)
    assert losses_of(history_1)[-3:].mean() < losses_of(history_1)[0] - 0.05
    inputs, _ = toy_data()
    np.testing.assert_allclose(predict_logits(trained_2, inputs, split), predict_logits(trained_1, inputs, one),
                               atol=1e-3)

    specs = {path[-2:]: var.get_value().sharding.spec for path, var in nnx.to_flat_state(nnx.state(trained_2))}
    assert specs["widen", "kernel"] == P(None, "model") and specs["widen", "bias"] == P()
    assert specs["narrow", "kernel"] == P("model", None) and specs["query", "kernel"] == P(None, "model")


def test_toy_decoder_generates_as_its_uncached_forward_pass(toy_folder):
    model, tokenizer = build_causal_lm(str(toy_folder))
    prompts = [[5, 9, 14, 3], [7, 2]]
    got = [c.token_ids for c in Generator(model, tokenizer, rows=2, max_length=16, eos_ids=[])
           .generate_ids(prompts, GenerationConfig(max_new_tokens=6))]
    for prompt, tokens in zip(prompts, got, strict=True):
        ids = list(prompt)
        for _ in range(6):  # greedy, each step over the whole text again
            logits = model(jnp.asarray([ids]), jnp.ones((1, len(ids)), jnp.int32))
            ids.append(int(jnp.argmax(logits[0, -1])))
        assert tokens == ids[len(prompt):]


def test_registration_refuses_a_taken_model_type_and_clashing_parallel_names():
    kw = dict(read_config=read_config, checkpoint_names=checkpoint_names, prefixes=(), pooling="last")
    with pytest.raises(ValueError, match=r"model_type 'w2s_toy' is already registered by model family 'toy'"):
        register_family("toy2", model_types=("w2s_toy",), column_parallel=(), row_parallel=(), **kw)(Toy)
    with pytest.raises(ValueError, match=r"\['widen'\] are column-parallel in one of 'toy3' and 'toy'"):
        register_family("toy3", model_types=("w2s_toy3",), column_parallel=(), row_parallel=("widen",), **kw)(Toy)
    assert "toy2" not in FAMILIES and "toy3" not in FAMILIES and "w2s_toy3" not in MODEL_TYPES
    with pytest.raises(ValueError, match=r"unknown model_type 'w2s_tyo'\. Did you mean 'w2s_toy'"):
        TransformerConfig.from_hf({"model_type": "w2s_tyo"})
