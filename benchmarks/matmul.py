"""The matrix products of a model's train step, each timed through XLA (`jax.jit`) and through torch
on the CPU, alternating: how much of a JAX/torch gap in `train_step.py` the two libraries' matmul
kernels make on their own, whatever the rest of the step does.

    python benchmarks/matmul.py --model minilm --batch 32 --seq 64

Per transformer layer, with T = batch x seq tokens: each dense layer's forward product and its two
backward ones (the input gradient and the weight gradient, which read an operand transposed), and
attention forward and backward (causal for GPT-2) as each library's model runs it (`jax.nn.dot_product_attention` on
[batch, seq, heads, dim] with key lengths, as `w2s` calls it; `scaled_dot_product_attention` on
[batch, heads, seq, dim] with a padding mask, as `transformers` calls it). The last lines weigh
each by how often the step runs it: the step's matmul and attention time with each library.
"""
from __future__ import annotations

import argparse
import dataclasses
import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from harness import SHAPES, hf_config, host_cpu, seconds_per_call
from w2s.checkpoint import write_json_atomic
from w2s.runtime import host_memory, recycle_host_memory


@dataclasses.dataclass(frozen=True)
class Dense:
    """C[m, n] = A[m, k] @ B[k, n], A or B stored transposed where the step reads it so."""

    name: str
    m: int
    k: int
    n: int
    transpose_a: bool = False
    transpose_b: bool = False
    per_layer: int = 1  # how many of these one layer's step runs

    @property
    def flops(self) -> int:
        return 2 * self.m * self.k * self.n

    def product(self, a: Any, b: Any) -> Any:
        """The product of operands stored as `operands` gives them (numpy, JAX or torch arrays)."""
        return (a.T if self.transpose_a else a) @ (b.T if self.transpose_b else b)

    def operands(self) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng(0)
        a = rng.standard_normal((self.k, self.m) if self.transpose_a else (self.m, self.k), np.float32)
        b = rng.standard_normal((self.n, self.k) if self.transpose_b else (self.k, self.n), np.float32)
        return a, b


def dense_products(name: str, tokens: int, fan_in: int, fan_out: int, per_layer: int) -> list[Dense]:
    """Forward y = x W; backward dx = dy W^T and dW = x^T dy."""
    return [
        Dense(f"{name}: forward", tokens, fan_in, fan_out, per_layer=per_layer),
        Dense(f"{name}: d input", tokens, fan_out, fan_in, transpose_b=True, per_layer=per_layer),
        Dense(f"{name}: d weight", fan_in, tokens, fan_out, transpose_a=True, per_layer=per_layer),
    ]


def layer_products(hidden: int, inter: int, tokens: int) -> list[Dense]:
    return [
        *dense_products("query, key, value", tokens, hidden, hidden, per_layer=3),
        *dense_products("attention out", tokens, hidden, hidden, per_layer=1),
        *dense_products("mlp up", tokens, hidden, inter, per_layer=1),
        *dense_products("mlp down", tokens, inter, hidden, per_layer=1),
    ]


def jax_dense(p: Dense) -> Callable[[int], None]:
    a, b = (jnp.asarray(x) for x in p.operands())
    product = jax.jit(p.product)

    def run(iters: int) -> None:
        for _ in range(iters):
            out = product(a, b)
        out.block_until_ready()

    return run


def torch_dense(p: Dense) -> Callable[[int], None]:
    import torch

    a, b = (torch.from_numpy(x) for x in p.operands())

    def run(iters: int) -> None:
        for _ in range(iters):
            p.product(a, b)

    return run


def attention_inputs(batch: int, seq: int, heads: int, dim: int) -> tuple[list[np.ndarray], np.ndarray]:
    """q, k, v and the output gradient [batch, seq, heads, dim]; key lengths (a quarter padded)."""
    rng = np.random.default_rng(0)
    arrays = [rng.standard_normal((batch, seq, heads, dim), np.float32) for _ in range(4)]
    lengths = np.where(np.arange(batch) % 4 == 0, seq // 2, seq).astype(np.int32)
    return arrays, lengths


def jax_attention(batch: int, seq: int, heads: int, dim: int, causal: bool) -> Callable[[int], None]:
    (q, k, v, grad), lengths = attention_inputs(batch, seq, heads, dim)
    q, k, v, grad, lengths = map(jnp.asarray, (q, k, v, grad, lengths))

    def attend(q, k, v):
        return jax.nn.dot_product_attention(q, k, v, is_causal=causal, key_value_seq_lengths=lengths)

    backward = jax.jit(lambda q, k, v, g: jax.vjp(attend, q, k, v)[1](g))

    def run(iters: int) -> None:
        for _ in range(iters):
            out = backward(q, k, v, grad)
        jax.block_until_ready(out)

    return run


def torch_attention(batch: int, seq: int, heads: int, dim: int, causal: bool) -> Callable[[int], None]:
    import torch
    import torch.nn.functional as F

    (q, k, v, grad), lengths = attention_inputs(batch, seq, heads, dim)
    q, k, v, grad = (torch.from_numpy(x).transpose(1, 2).requires_grad_() for x in (q, k, v, grad))
    mask = np.broadcast_to((np.arange(seq)[None, :] < lengths[:, None])[:, None, None, :], (batch, 1, seq, seq))
    if causal:
        mask = mask & np.tril(np.ones((seq, seq), bool))
    mask = torch.from_numpy(np.ascontiguousarray(mask))

    def run(iters: int) -> None:
        for _ in range(iters):
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
            torch.autograd.grad(out, (q, k, v), grad)

    return run


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", choices=sorted(SHAPES), default="minilm")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--seq", type=int, default=64)
    p.add_argument("--rounds", type=int, default=5, help="timing rounds per library and product; the median is reported")
    p.add_argument("--json", default=None, help="also write the numbers to this file")
    args = p.parse_args(argv)
    print(f"host memory: {recycle_host_memory()}")
    import torch

    hf = hf_config(args.model)
    hidden, layers, heads = hf.hidden_size, hf.num_hidden_layers, hf.num_attention_heads
    inter = getattr(hf, "intermediate_size", None) or getattr(hf, "n_inner", None) or 4 * hidden
    causal = hf.model_type == "gpt2"
    tokens = args.batch * args.seq
    device = jax.devices()[0]
    if device.platform != "cpu":
        p.error("this compares CPU kernels: run it where JAX computes on the CPU")
    print(f"model {args.model}: {layers} layers, hidden {hidden}, mlp {inter}, {heads} heads; batch {args.batch} x seq "
          f"{args.seq} = {tokens} tokens; float32 on {host_cpu()}, torch {torch.__version__} with "
          f"{torch.get_num_threads()} threads")
    timed = functools.partial(seconds_per_call, rounds=args.rounds, round_s=0.05)
    rows = []
    print(f"{'product':<30}{'m x k x n':>20}{'per layer':>11}{'JAX GFLOP/s':>13}{'torch GFLOP/s':>15}{'JAX/torch':>11}")
    for product in layer_products(hidden, inter, tokens):
        jax_s, torch_s = timed(jax_dense(product)), timed(torch_dense(product))
        rows.append({**dataclasses.asdict(product), "jax_s": jax_s, "torch_s": torch_s})
        print(f"{product.name:<30}{f'{product.m} x {product.k} x {product.n}':>20}{product.per_layer:>11}"
              f"{product.flops / jax_s / 1e9:>13.1f}{product.flops / torch_s / 1e9:>15.1f}{torch_s / jax_s:>10.2f}x")
    dim = hidden // heads
    attention = {"jax_s": timed(jax_attention(args.batch, args.seq, heads, dim, causal)),
                 "torch_s": timed(torch_attention(args.batch, args.seq, heads, dim, causal))}
    print(f"{'attention' + (' (causal)' if causal else '') + ', fwd + bwd':<30}{f'{heads} heads x {dim}':>20}{1:>11}"
          f"{attention['jax_s'] * 1e3:>10.2f} ms{attention['torch_s'] * 1e3:>12.2f} ms"
          f"{attention['torch_s'] / attention['jax_s']:>10.2f}x")
    dense_only = {side: layers * sum(r["per_layer"] * r[f"{side}_s"] for r in rows) for side in ("jax", "torch")}
    totals = {side: dense_only[side] + layers * attention[f"{side}_s"] for side in ("jax", "torch")}
    print(f"the step's dense products, {layers} layers: JAX {dense_only['jax'] * 1e3:.1f} ms, torch "
          f"{dense_only['torch'] * 1e3:.1f} ms ({dense_only['torch'] / dense_only['jax']:.2f}x)")
    print(f"with attention: JAX {totals['jax'] * 1e3:.1f} ms, torch {totals['torch'] * 1e3:.1f} ms "
          f"({totals['torch'] / totals['jax']:.2f}x; above 1: JAX's kernels are faster)")
    out = {"model": args.model, "batch": args.batch, "seq": args.seq, "layers": layers, "products": rows,
           "attention": attention, "dense_s": dense_only, "total_s": totals, "host_cpu": host_cpu(),
           "torch": torch.__version__, "torch_threads": torch.get_num_threads(), "host_memory": host_memory()}
    if args.json:
        write_json_atomic(args.json, out)
    return out


if __name__ == "__main__":
    main()
