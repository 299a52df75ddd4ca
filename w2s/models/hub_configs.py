"""The config.json fields that shape the hub ladders' models (w2s/sweeps/ladders.py), copied from their hub
repos, so `w2s plan` can compile their train steps offline, without downloading anything.
tests/test_plan.py checks each against its rung's parameter count."""
from __future__ import annotations

from typing import Any


def _gpt2(n_embd: int, n_layer: int, n_head: int) -> dict[str, Any]:
    return dict(model_type="gpt2", vocab_size=50257, n_positions=1024, n_embd=n_embd, n_layer=n_layer,
                n_head=n_head, layer_norm_epsilon=1e-5, activation_function="gelu_new", tie_word_embeddings=True)


def _qwen2(hidden: int, intermediate: int, layers: int, heads: int, kv_heads: int, vocab: int, tie: bool,
           max_position: int) -> dict[str, Any]:
    return dict(model_type="qwen2", vocab_size=vocab, hidden_size=hidden, intermediate_size=intermediate,
                num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv_heads,
                max_position_embeddings=max_position, rms_norm_eps=1e-6, rope_theta=1e6, hidden_act="silu",
                tie_word_embeddings=tie, use_sliding_window=False)


def _pythia(hidden: int, layers: int, heads: int, vocab: int) -> dict[str, Any]:
    return dict(model_type="gpt_neox", vocab_size=vocab, hidden_size=hidden, intermediate_size=4 * hidden,
                num_hidden_layers=layers, num_attention_heads=heads, max_position_embeddings=2048,
                rotary_pct=0.25, rotary_emb_base=10000, use_parallel_residual=True, hidden_act="gelu",
                layer_norm_eps=1e-5, tie_word_embeddings=False)


HUB_CONFIGS: dict[str, dict[str, Any]] = {
    "gpt2": _gpt2(768, 12, 12),
    "gpt2-medium": _gpt2(1024, 24, 16),
    "gpt2-large": _gpt2(1280, 36, 20),
    "gpt2-xl": _gpt2(1600, 48, 25),
    "Qwen/Qwen2.5-0.5B": _qwen2(896, 4864, 24, 14, 2, 151936, True, 32768),
    "Qwen/Qwen2.5-1.5B": _qwen2(1536, 8960, 28, 12, 2, 151936, True, 131072),
    "Qwen/Qwen2.5-3B": _qwen2(2048, 11008, 36, 16, 2, 151936, True, 32768),
    "Qwen/Qwen2.5-7B": _qwen2(3584, 18944, 28, 28, 4, 152064, False, 131072),
    "EleutherAI/pythia-70m": _pythia(512, 6, 8, 50304),
    "EleutherAI/pythia-160m": _pythia(768, 12, 12, 50304),
    "EleutherAI/pythia-410m": _pythia(1024, 24, 16, 50304),
    "EleutherAI/pythia-1b": _pythia(2048, 16, 8, 50304),
    "EleutherAI/pythia-1.4b": _pythia(2048, 24, 16, 50304),
    "EleutherAI/pythia-2.8b": _pythia(2560, 32, 32, 50304),
    "EleutherAI/pythia-6.9b": _pythia(4096, 32, 32, 50432),
}
