"""One config for every backbone, mapped from Hugging Face config.json files."""
from __future__ import annotations

import dataclasses
from typing import Any

from w2s.config import ConfigError
from w2s.models.family import MODEL_TYPES


@dataclasses.dataclass(frozen=True)
class TransformerConfig:
    """Shapes and options of a backbone; `arch` picks the module that reads it."""

    arch: str  # its model family's name (w2s/models/family.py)
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
        """Maps an HF config.json dict, so checkpoints load without transformers: the model family
        serving its model_type reads it."""
        hint = " A new model family is one file in w2s/models/ (see w2s/models/family.py)."
        return MODEL_TYPES.get(str(d.get("model_type")), hint).read_config(d)


def rope_theta(d: dict[str, Any]) -> float:
    """Reads rope_theta from either the old (top-level; GPT-NeoX's rotary_emb_base) or the v5
    (rope_parameters) layout."""
    params = d.get("rope_parameters") or d.get("rope_scaling") or {}
    rope_type = params.get("rope_type", params.get("type", "default"))
    if rope_type != "default":
        raise ConfigError(f"RoPE scaling {rope_type!r} is not supported, only plain RoPE")
    return float(params.get("rope_theta", d.get("rope_theta", d.get("rotary_emb_base", 10_000.0))))
