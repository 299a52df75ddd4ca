"""One config for every backbone, mapped from Hugging Face config.json files."""
from __future__ import annotations

import dataclasses
from typing import Any


@dataclasses.dataclass(frozen=True)
class TransformerConfig:
    """Shapes and options of a backbone; `arch` picks the module that reads it."""

    arch: str  # 'bert' | 'gpt2' | 'llama' (llama also covers qwen2) | 'gpt_neox' (Pythia)
    vocab_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    max_position: int
    norm_eps: float
    activation: str
    rope_theta: float = 10_000.0
    rotary_fraction: float = 1.0  # GPT-NeoX rotates only this leading fraction of each head
    parallel_residual: bool = False  # GPT-NeoX: x + attn(ln1(x)) + mlp(ln2(x)) instead of one after the other
    qkv_bias: bool = False
    tie_embeddings: bool = False
    type_vocab_size: int = 0
    # Gemma-3: attention scores scaled by query_pre_attn_scalar ** -0.5 (else head_dim ** -0.5);
    # the layers marked in sliding_layers see only the last sliding_window tokens and use RoPE base
    # rope_local_theta, the others rope_theta with linear scaling by rope_factor.
    query_pre_attn_scalar: float | None = None
    sliding_window: int | None = None
    sliding_layers: tuple[bool, ...] = ()
    rope_local_theta: float = 10_000.0
    rope_factor: float = 1.0

    @property
    def rotary_dim(self) -> int:
        """Dimensions of each head that RoPE rotates, as HF computes it: int(head_dim * fraction)."""
        return int(self.head_dim * self.rotary_fraction)

    @classmethod
    def from_hf(cls, d: dict[str, Any]) -> TransformerConfig:
        """Maps an HF config.json dict, so checkpoints load without transformers."""
        model_type = d.get("model_type")
        if model_type == "bert":
            heads = d["num_attention_heads"]
            return cls(
                arch="bert",
                vocab_size=d["vocab_size"],
                hidden_size=d["hidden_size"],
                num_layers=d["num_hidden_layers"],
                num_heads=heads,
                num_kv_heads=heads,
                head_dim=d["hidden_size"] // heads,
                intermediate_size=d["intermediate_size"],
                max_position=d["max_position_embeddings"],
                norm_eps=d.get("layer_norm_eps", 1e-12),
                activation=d.get("hidden_act", "gelu"),
                qkv_bias=True,
                tie_embeddings=d.get("tie_word_embeddings", True),
                type_vocab_size=d.get("type_vocab_size", 2),
            )
        if model_type == "gpt2":
            hidden, heads = d["n_embd"], d["n_head"]
            return cls(
                arch="gpt2",
                vocab_size=d["vocab_size"],
                hidden_size=hidden,
                num_layers=d["n_layer"],
                num_heads=heads,
                num_kv_heads=heads,
                head_dim=hidden // heads,
                intermediate_size=d.get("n_inner") or 4 * hidden,
                max_position=d["n_positions"],
                norm_eps=d.get("layer_norm_epsilon", 1e-5),
                activation=d.get("activation_function", "gelu_new"),
                qkv_bias=True,
                tie_embeddings=d.get("tie_word_embeddings", True),
            )
        if model_type in ("llama", "qwen2"):
            if d.get("use_sliding_window"):
                raise ValueError("sliding-window attention is not supported")
            hidden, heads = d["hidden_size"], d["num_attention_heads"]
            return cls(
                arch="llama",
                vocab_size=d["vocab_size"],
                hidden_size=hidden,
                num_layers=d["num_hidden_layers"],
                num_heads=heads,
                num_kv_heads=d.get("num_key_value_heads") or heads,
                head_dim=d.get("head_dim") or hidden // heads,
                intermediate_size=d["intermediate_size"],
                max_position=d["max_position_embeddings"],
                norm_eps=d.get("rms_norm_eps", 1e-6),
                activation=d.get("hidden_act", "silu"),
                rope_theta=_rope_theta(d),
                qkv_bias=model_type == "qwen2" or bool(d.get("attention_bias")),
                tie_embeddings=d.get("tie_word_embeddings", False),
            )
        if model_type == "gpt_neox":
            # Defaults are GPTNeoXConfig's; Pythia's config.json uses the old rotary_* names.
            hidden, heads = d["hidden_size"], d["num_attention_heads"]
            params = d.get("rope_parameters") or {}
            return cls(
                arch="gpt_neox",
                vocab_size=d["vocab_size"],
                hidden_size=hidden,
                num_layers=d["num_hidden_layers"],
                num_heads=heads,
                num_kv_heads=heads,
                head_dim=hidden // heads,
                intermediate_size=d["intermediate_size"],
                max_position=d["max_position_embeddings"],
                norm_eps=d.get("layer_norm_eps", 1e-5),
                activation=d.get("hidden_act", "gelu"),
                rope_theta=_rope_theta(d),
                rotary_fraction=float(params.get("partial_rotary_factor", d.get("rotary_pct", 0.25))),
                parallel_residual=d.get("use_parallel_residual", True),
                qkv_bias=d.get("attention_bias", True),
                tie_embeddings=d.get("tie_word_embeddings", False),
            )
        if model_type == "gemma3_text":  # until the model-family registry lands
            from w2s.models.gemma3 import read_config
            return read_config(d)
        raise ValueError(
            f"unsupported model_type {model_type!r}; supported: bert, gpt2, llama, qwen2, gpt_neox"
        )


def _rope_theta(d: dict[str, Any]) -> float:
    """Reads rope_theta from either the old (top-level; GPT-NeoX's rotary_emb_base) or the v5
    (rope_parameters) layout."""
    params = d.get("rope_parameters") or d.get("rope_scaling") or {}
    rope_type = params.get("rope_type", params.get("type", "default"))
    if rope_type != "default":
        raise ValueError(f"RoPE scaling {rope_type!r} is not supported, only plain RoPE")
    return float(params.get("rope_theta", d.get("rope_theta", d.get("rotary_emb_base", 10_000.0))))
