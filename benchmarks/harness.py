"""What both benchmarks share: model shapes, the sharded train step built as `w2s.train.train`
builds it, a synthetic batch, the parameter count behind MFU, and the measured peak matmul rate.

Import this after setting any XLA environment variables: it imports jax.
"""
from __future__ import annotations

import os
import pathlib
import statistics
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import transformers
from flax import nnx

from w2s import sharding
from w2s.losses import LossTable, make_loss
from w2s.models import Classifier, TransformerConfig
from w2s.models.family import family_of, new_backbone
from w2s.train import TrainConfig, init_train_state, jit_train_step, make_optimizer, make_train_step

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
MFU_NOTE = (
    "MFU = 6 * N * tokens/s / measured peak matmul FLOP/s, N = all parameters except the token and "
    "position embedding tables; attention-score FLOPs are not counted."
)


def _bert(hidden: int, layers: int, heads: int, inter: int, vocab: int, positions: int) -> transformers.BertConfig:
    return transformers.BertConfig(
        vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
        intermediate_size=inter, max_position_embeddings=positions, num_labels=2,
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
    )


def _gpt2(hidden: int, layers: int, heads: int, vocab: int, positions: int) -> transformers.GPT2Config:
    # The last id is eos and pad, as in GPT-2; synthetic batches never draw it, so HF pools the last token.
    eos = vocab - 1
    return transformers.GPT2Config(
        vocab_size=vocab, n_embd=hidden, n_layer=layers, n_head=heads, n_positions=positions, num_labels=2,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
        bos_token_id=eos, eos_token_id=eos, pad_token_id=eos,
    )


# One HF config per shape, so the JAX and the PyTorch model are built from the same description.
# Dropout is off because our backbones have none. The tiny shapes are for the smoke tests.
SHAPES: dict[str, Callable[[], transformers.PretrainedConfig]] = {
    "minilm": lambda: _bert(384, 6, 12, 1536, 30522, 512),
    "gpt2-small": lambda: _gpt2(768, 12, 12, 50257, 1024),
    "gpt2-medium": lambda: _gpt2(1024, 24, 16, 50257, 1024),
    # all-mpnet-base-v2's shape (the offline ladder's MPNet rung).
    "mpnet-base": lambda: transformers.MPNetConfig(
        vocab_size=30527, hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
        max_position_embeddings=514, layer_norm_eps=1e-5, num_labels=2, hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    ),
    "tiny-bert": lambda: _bert(64, 2, 4, 256, 512, 64),
    "tiny-gpt2": lambda: _gpt2(64, 2, 4, 512, 64),
}


def hf_config(model: str) -> transformers.PretrainedConfig:
    return SHAPES[model]()


def jax_classifier(hf: transformers.PretrainedConfig, dtype: Any, seed: int = 0) -> Classifier:
    """Randomly initialised classifier; `dtype` is the compute dtype, parameters stay float32."""
    cfg = TransformerConfig.from_hf(hf.to_dict())
    backbone = new_backbone(cfg, dtype=dtype, param_dtype=jnp.float32, rngs=nnx.Rngs(seed))
    return Classifier(backbone, family_of(cfg).pooling)


def non_embedding_params(model: Classifier) -> int:
    """N of the 6*N*tokens FLOP estimate: every parameter but the token and position tables."""
    total = sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
    return total - model.backbone.token_embed.embedding.size - model.backbone.position_embed.embedding.size


def synthetic_batch(hf: transformers.PretrainedConfig, batch: int, seq: int, seed: int = 0) -> dict[str, np.ndarray]:
    """One step's batch as the train step takes it ([accum=1, batch, ...]): full-length rows of ids
    below the last vocab id (GPT-2's eos/pad), and one-hot random labels."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, hf.vocab_size - 1, size=(1, batch, seq), dtype=np.int32)
    labels = rng.integers(0, 2, size=(1, batch))
    return {
        "input_ids": ids,
        "attention_mask": np.ones_like(ids),
        "targets": np.eye(2, dtype=np.float32)[labels],
    }


def sharded_train_step(
    model: Classifier, mesh: jax.sharding.Mesh, cfg: TrainConfig, total_steps: int
) -> tuple[dict, Callable[[dict, dict], tuple[dict, dict]]]:
    """The initial state and the jitted step exactly as `w2s.train.train` builds them."""
    optimizer, loss = make_optimizer(cfg), make_loss("xent")
    losses = LossTable.of(loss)
    graphdef, state, state_sh = init_train_state(model, optimizer, mesh, total_steps, cfg.warmup_steps(total_steps),
                                                 cfg.lr, loss, losses)
    step = make_train_step(graphdef, optimizer, losses, cfg.remat)
    return state, jit_train_step(step, mesh, state_sh)


def put_batch(mesh: jax.sharding.Mesh, host: dict[str, np.ndarray]) -> dict[str, jax.Array]:
    return jax.device_put(host, sharding.batch_sharding(mesh, leading_axes=1))


def round_times(run: Callable[[], None], rounds: int) -> list[float]:
    """Wall time of each of `rounds` calls of `run` (which must block until its work is done)."""
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return times


def seconds_per_call(run: Callable[[int], None], rounds: int = 5, round_s: float = 0.1) -> float:
    """Seconds of one call in `run(n)`, which makes n calls and waits for the last: warmed up, with n
    set so a round takes at least `round_s`, the median of `rounds` rounds."""
    run(1)
    start = time.perf_counter()
    run(1)
    iters = max(1, int(round_s / (time.perf_counter() - start)))
    return statistics.median(round_times(lambda: run(iters), rounds)) / iters


def matmul_flops(run: Callable[[int], None], size: int, rounds: int = 5) -> float:
    """FLOP/s of `run(n)`, which does n size x size matmuls and waits for the last (seconds_per_call)."""
    return 2 * size**3 / seconds_per_call(run, rounds)


def peak_matmul_flops(dtype: Any, size: int | None = None, rounds: int = 5) -> tuple[float, int]:
    """FLOP/s of a large square jitted matmul in `dtype` on the first device: MFU's denominator,
    measured rather than a datasheet number, so it states what this chip reaches through XLA.
    Returns (FLOP/s, matrix size)."""
    device = jax.devices()[0]
    n = size or (2048 if device.platform == "cpu" else 8192)
    ka, kb = jax.random.split(jax.random.key(0))
    a = jax.device_put(jax.random.normal(ka, (n, n), dtype), device)
    b = jax.device_put(jax.random.normal(kb, (n, n), dtype), device)
    matmul = jax.jit(jnp.matmul)

    def run(iters: int) -> None:
        for _ in range(iters):
            out = matmul(a, b)
        out.block_until_ready()

    return matmul_flops(run, n, rounds), n


def host_cpu() -> str:
    """The host's CPU model, core count and widest vector unit (from /proc/cpuinfo): CPU results
    differ between machines far more than between runs."""
    try:
        info = pathlib.Path("/proc/cpuinfo").read_text()
    except OSError:
        return f"unknown CPU, {os.cpu_count()} cores"
    fields = dict(line.split(":", 1) for line in info.splitlines() if ":" in line)
    fields = {k.strip(): v.strip() for k, v in fields.items()}
    flags = set(fields.get("flags", "").split())
    vector = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "no AVX2"
    return f"{fields.get('model name', 'unknown CPU')}, {os.cpu_count()} cores, {vector}"


def fmt_si(x: float) -> str:
    for unit, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(x) >= scale:
            return f"{x / scale:.2f}{unit}"
    return f"{x:.2f}"
