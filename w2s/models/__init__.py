"""Model registry: a name -> a checkpoint folder -> a classifier and its tokenizer.

A name is an offline name (see known_models), a local HF-format folder, or a hub repo id.
"""
from __future__ import annotations

import dataclasses
import pathlib
from typing import Any

import huggingface_hub
import huggingface_hub.constants
import jax.numpy as jnp
import transformers
from flax import nnx

# Each family module registers its backbone when imported (w2s/models/family.py).
from w2s.config import ConfigError, MissingFileError
from w2s.models import bert, gemma3, gpt2, gpt_neox, llama, mpnet  # noqa: F401
from w2s.models.classifier import Classifier
from w2s.models.config import TransformerConfig
from w2s.models.family import MODEL_TYPES, family_of, new_backbone
from w2s.models.loading import load_pretrained, read_hf_config
from w2s.models.sources import SOURCES, model_dir

__all__ = [
    "Classifier",
    "TransformerConfig",
    "build_backbone",
    "build_classifier",
    "known_models",
    "resolve_model_dir",
]

# Config, tokenizer files (tokenizer.json, vocab.txt, merges.txt, tokenizer.model) and weights.
_HUB_FILES = ["*.json", "*.txt", "*.model", "model*.safetensors"]


def known_models() -> list[str]:
    return sorted(SOURCES)


def known_model_types() -> list[str]:
    """The config.json model_types of the registered families: any HF folder of these loads."""
    return MODEL_TYPES.names()


def resolve_model_dir(name: str) -> pathlib.Path:
    """The local HF-format folder behind a model name, downloading hub repos into the HF cache.
    An offline name not fetched yet raises an error naming the command that fetches it."""
    if name in SOURCES:
        return model_dir(name)
    path = pathlib.Path(name).expanduser()
    if path.is_dir():
        return path
    if name.startswith(("/", ".", "~")):
        raise MissingFileError(f"model folder {path.resolve()} does not exist")
    try:
        folder = pathlib.Path(huggingface_hub.snapshot_download(name, allow_patterns=_HUB_FILES))
        if not any(folder.glob("model*.safetensors")):
            # Only repos without safetensors get the (often duplicate) torch weights.
            huggingface_hub.snapshot_download(name, allow_patterns=["pytorch_model*.bin"])
    except (OSError, ValueError) as e:
        raise ConfigError(
            f"unknown model {name!r}: not an offline name (known: {', '.join(known_models())}), "
            f"not a folder (looked at {path.resolve()}), and not on the HF hub or in its cache "
            f"({huggingface_hub.constants.HF_HUB_CACHE}): {type(e).__name__}: {e}"
        ) from e
    return folder


def build_backbone(
    name: str,
    *,
    num_layers: int | None = None,
    pretrained: bool = True,
    dtype: Any = jnp.float32,
    param_dtype: Any = jnp.float32,
    seed: int = 0,
) -> nnx.Module:
    """The backbone of `name`, cut to its first `num_layers` layers.

    pretrained=False keeps the HF-style random init, for same-shape models trained from scratch.
    """
    folder = resolve_model_dir(name)
    cfg = TransformerConfig.from_hf(read_hf_config(folder))
    if num_layers is not None:
        if num_layers < 0:
            raise ConfigError(f"num_layers must be >= 0, got {num_layers}")
        cfg = dataclasses.replace(cfg, num_layers=num_layers)

    def make() -> nnx.Module:
        return new_backbone(cfg, dtype=dtype, param_dtype=param_dtype, rngs=nnx.Rngs(seed))

    if not pretrained:
        return make()
    return load_pretrained(nnx.eval_shape(make), folder)


def build_classifier(
    name: str,
    *,
    num_layers: int | None = None,
    pretrained: bool = True,
    dtype: Any = jnp.float32,
    param_dtype: Any = jnp.float32,
    seed: int = 0,
    pooling: str | None = None,
) -> tuple[Classifier, Any]:
    """A zero-head classifier on build_backbone(name, ...) and the tokenizer of that model.

    The tokenizer pads on the right (the backbones assume it); decoders without a pad token pad
    with eos, which pooling tells apart from a real eos through the attention mask.
    """
    folder = resolve_model_dir(name)
    backbone = build_backbone(
        str(folder),
        num_layers=num_layers,
        pretrained=pretrained,
        dtype=dtype,
        param_dtype=param_dtype,
        seed=seed,
    )
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "right"
    return Classifier(backbone, pooling or family_of(backbone.cfg).pooling), tokenizer
