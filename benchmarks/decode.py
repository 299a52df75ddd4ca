"""Decode throughput of our JAX generation (w2s.generation.generate: KV cache, jitted step) against
`transformers`' PyTorch `generate` on the same model, same weights and same prompts. Both decode
greedily, exactly --new-tokens tokens per row (no eos), with their KV caches; rounds alternate
between them in one process, so both see the same machine and the same load.

    python benchmarks/decode.py --model gpt2-small --batch 8 --prompt-len 64 --new-tokens 64
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from typing import Any, Callable

os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # torch may share the GPU

import jax  # noqa: E402
import numpy as np  # noqa: E402
import transformers  # noqa: E402
from flax import nnx  # noqa: E402

from harness import DTYPES, SHAPES, hf_config  # noqa: E402
from w2s.checkpoint import write_json_atomic  # noqa: E402
from w2s.generation.generate import GenerationConfig, Generator  # noqa: E402
from w2s.models import TransformerConfig  # noqa: E402
from w2s.models.causal_lm import CausalLM  # noqa: E402
from w2s.models.family import family_of, new_backbone  # noqa: E402
from w2s.models.loading import load_pretrained  # noqa: E402
from w2s.runtime import host_memory, recycle_host_memory  # noqa: E402

DECODERS = sorted(m for m in SHAPES if family_of(TransformerConfig.from_hf(hf_config(m).to_dict())).decoder)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", choices=DECODERS, default="gpt2-small")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--prompt-len", type=int, default=64)
    p.add_argument("--new-tokens", type=int, default=64)
    p.add_argument("--dtype", choices=sorted(DTYPES), default="float32", help="weights and compute, both sides")
    p.add_argument("--rounds", type=int, default=3, help="timed rounds per implementation; the median is reported")
    p.add_argument("--warmup", type=int, default=1, help="untimed rounds first (compilation, allocator warm-up)")
    p.add_argument("--no-torch", action="store_true")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto", help="torch's device")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None, help="also write the numbers to this file")
    args = p.parse_args(argv)
    if min(args.batch, args.prompt_len, args.new_tokens, args.rounds, args.warmup) < 1:
        p.error("--batch, --prompt-len, --new-tokens, --rounds and --warmup must be at least 1")
    return args


def prompts(hf: transformers.PretrainedConfig, args: argparse.Namespace, round_: int) -> np.ndarray:
    """Fresh prompts every round (so our cache cannot reuse the last round's), never the eos id."""
    rng = np.random.default_rng([args.seed, round_])
    return rng.integers(0, hf.vocab_size - 1, size=(args.batch, args.prompt_len), dtype=np.int32)


def torch_model(hf: transformers.PretrainedConfig, args: argparse.Namespace) -> Any:
    """The random-init GPT2LMHeadModel both sides run, on the CPU."""
    import torch

    torch.manual_seed(args.seed)
    model = transformers.GPT2LMHeadModel(hf).eval()
    model.generation_config.eos_token_id = None  # both sides decode exactly --new-tokens tokens
    model.generation_config.pad_token_id = hf.pad_token_id
    return model.to(dtype=torch.bfloat16 if args.dtype == "bfloat16" else torch.float32)


def jax_runner(model: Any, hf: transformers.PretrainedConfig, args: argparse.Namespace) -> Callable[[np.ndarray], np.ndarray]:
    """Our CausalLM with the torch model's weights, read through w2s's checkpoint loader."""
    cfg = TransformerConfig.from_hf(hf.to_dict())
    dtype = DTYPES[args.dtype]

    def make() -> CausalLM:
        backbone = new_backbone(cfg, dtype=dtype, param_dtype=dtype, rngs=nnx.Rngs(0))
        return CausalLM(backbone, dtype=dtype, param_dtype=dtype, rngs=nnx.Rngs(1))

    with tempfile.TemporaryDirectory() as folder:
        model.save_pretrained(folder)
        ours = load_pretrained(nnx.eval_shape(make), folder, lm_head=True)
    gen = Generator(ours, None, rows=args.batch, max_length=args.prompt_len + args.new_tokens, eos_ids=[])
    settings = GenerationConfig(max_new_tokens=args.new_tokens)
    return lambda ids: np.array([c.token_ids for c in gen.generate_ids(ids.tolist(), settings)])


def torch_runner(model: Any, args: argparse.Namespace, device: str) -> Callable[[np.ndarray], np.ndarray]:
    import torch

    def run(ids: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            x = torch.from_numpy(ids).long().to(device)
            out = model.generate(input_ids=x, attention_mask=torch.ones_like(x), do_sample=False,
                                 max_new_tokens=args.new_tokens)
        return out[:, ids.shape[1]:].cpu().numpy()  # .cpu() waits for the device

    return run


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    print(f"host memory: {recycle_host_memory()}")
    hf = hf_config(args.model)
    if args.prompt_len + args.new_tokens > hf.n_positions:
        raise SystemExit(f"--prompt-len + --new-tokens must be at most {hf.n_positions}")
    import torch

    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    reference = torch_model(hf, args)
    runners = {"jax": jax_runner(reference, hf, args)}
    if not args.no_torch:
        runners["torch"] = torch_runner(reference.to(device), args, device)

    for r in range(args.warmup):
        outputs = {name: run(prompts(hf, args, args.rounds + r)) for name, run in runners.items()}
    times: dict[str, list[float]] = {name: [] for name in runners}
    for r in range(args.rounds):  # alternate, so a change in machine load hits both alike
        ids = prompts(hf, args, r)
        for name, run in runners.items():
            start = time.perf_counter()
            outputs[name] = run(ids)
            times[name].append(time.perf_counter() - start)
    new = args.batch * args.new_tokens
    results = {name: {"round_s": statistics.median(t), "round_s_min": min(t), "round_s_max": max(t),
                      "tokens_per_s": new / statistics.median(t)} for name, t in times.items()}
    ratio = results["jax"]["tokens_per_s"] / results["torch"]["tokens_per_s"] if "torch" in results else None
    # Same weights, same prompts, greedy: the tokens should agree but for float ties.
    agree = float(np.mean(outputs["jax"] == outputs["torch"])) if "torch" in outputs else None

    jax_dev = jax.devices()[0]
    print(f"JAX device  : {jax_dev.platform} ({jax_dev.device_kind}); torch device: "
          f"{'not run' if args.no_torch else device} (torch {torch.__version__}, {torch.get_num_threads()} threads)")
    print(f"model {args.model} (random init, the same weights on both sides), {args.dtype}: batch {args.batch}, "
          f"prompt {args.prompt_len} tokens, {args.new_tokens} new tokens per row (greedy, prefill included); "
          f"{args.rounds} rounds after {args.warmup} warm-up")
    print(f"{'impl':<7}{'round s':>10}{'(min-max)':>18}{'new tokens/s':>14}")
    for name, r in results.items():
        spread = f"({r['round_s_min']:.2f}-{r['round_s_max']:.2f})"
        print(f"{name:<7}{r['round_s']:>10.3f}{spread:>18}{r['tokens_per_s']:>14.1f}")
    if ratio is not None:
        print(f"greedy tokens equal: {100 * agree:.1f}%")
        print(f"JAX/torch decode throughput: {ratio:.2f}x (above 1: JAX is faster)")
    out = {"model": args.model, "batch": args.batch, "prompt_len": args.prompt_len, "new_tokens": args.new_tokens,
           "dtype": args.dtype, "rounds": args.rounds, "jax_device": f"{jax_dev.platform} ({jax_dev.device_kind})",
           "torch_device": None if args.no_torch else device, "results": results, "jax_over_torch": ratio,
           "tokens_equal": agree, "host_memory": host_memory()}
    if args.json:
        write_json_atomic(args.json, out)
    return out


if __name__ == "__main__":
    main()
