"""Model families: everything w2s knows about one kind of backbone, declared in that backbone's file.

A family is one file in w2s/models/ (see bert.py, gpt2.py, llama.py, gpt_neox.py) holding:

    def read_config(d: dict) -> TransformerConfig: ...    # HF config.json -> our config, arch=NAME
    def checkpoint_names(cfg: TransformerConfig) -> NameMap: ...   # our param path -> HF tensor

    @register_family("name", model_types=("hf_model_type",), read_config=read_config,
                     checkpoint_names=checkpoint_names, prefixes=("wrapper.",), pooling="last",
                     column_parallel={"query", ...}, row_parallel={"out", ...})
    class Backbone(nnx.Module):
        def __init__(self, cfg, *, dtype, param_dtype, rngs): ...
        def __call__(self, input_ids, attention_mask): ...   # -> hidden states [B, T, H]
        def cached(self, input_ids, attention_mask, cache): ... # decoders only: enables generation

plus one import line in w2s/models/__init__.py, which imports every family so it registers. Loading
(loading.py), building (models/__init__.py, causal_lm.py) and sharding (sharding.py) read the
registry; this module imports no family, so there is no import cycle.
"""
from __future__ import annotations

from collections.abc import Callable, Collection
import dataclasses
from typing import TYPE_CHECKING, Any

import jax.numpy as jnp

from w2s.registry import Registry

if TYPE_CHECKING:  # only for annotations: config.py and loading.py import this module
    from flax import nnx

    from w2s.models.config import TransformerConfig
    from w2s.models.loading import NameMap


@dataclasses.dataclass(frozen=True)
class ModelFamily:
    name: str  # TransformerConfig.arch of its configs
    model_types: tuple[str, ...]  # the config.json model_types it serves
    backbone: type[nnx.Module]  # backbone(cfg, *, dtype, param_dtype, rngs)
    read_config: Callable[[dict[str, Any]], TransformerConfig]
    checkpoint_names: Callable[[TransformerConfig], NameMap]
    prefixes: tuple[str, ...]  # what task wrappers (BertForMaskedLM: "bert.") put before its tensor names
    pooling: str  # the Classifier's default: 'first' ([CLS]), 'last' (decoders) or 'mean'
    # Module names whose projections split over the `model` axis: column-parallel ones their output
    # features, row-parallel ones their input features (see sharding.py).
    column_parallel: frozenset[str]
    row_parallel: frozenset[str]
    lm_head: str = "lm_head"  # the checkpoint's untied LM head, for generation

    @property
    def decoder(self) -> bool:
        """Whether it generates: a decoder's backbone extends a KV cache (`cached`)."""
        return callable(getattr(self.backbone, "cached", None))


FAMILIES: Registry[ModelFamily] = Registry("model family", "model families")
MODEL_TYPES: Registry[ModelFamily] = Registry("model_type")  # config.json's model_type -> its family


def register_family(
    name: str, *, model_types: Collection[str], read_config: Callable[[dict[str, Any]], TransformerConfig],
    checkpoint_names: Callable[[TransformerConfig], NameMap], prefixes: Collection[str], pooling: str,
    column_parallel: Collection[str], row_parallel: Collection[str], lm_head: str = "lm_head",
) -> Callable[[type], type]:
    """A class decorator registering the decorated backbone as family `name` (fields: ModelFamily)."""

    def add(backbone: type) -> type:
        family = ModelFamily(name, tuple(model_types), backbone, read_config, checkpoint_names, tuple(prefixes),
                             pooling, frozenset(column_parallel), frozenset(row_parallel), lm_head)
        # Sharding reads a parameter's module name only, so a name must split the same way in every family.
        for other in FAMILIES.items():
            clash = (family.column_parallel & other[1].row_parallel) | (family.row_parallel & other[1].column_parallel)
            if clash:
                raise ValueError(f"model family {name!r}: modules {sorted(clash)} are column-parallel in one of "
                                 f"{name!r} and {other[0]!r} and row-parallel in the other; rename them.")
        origin = f"{backbone.__module__}.{backbone.__qualname__}"
        FAMILIES.refuse_taken(name, family, origin)
        for model_type in family.model_types:
            MODEL_TYPES.refuse_taken(model_type, family, f"model family {name!r}")
        FAMILIES.add(name, family, origin)
        for model_type in family.model_types:
            MODEL_TYPES.add(model_type, family, f"model family {name!r}")
        return backbone

    return add


def family_of(cfg: TransformerConfig) -> ModelFamily:
    return FAMILIES.get(cfg.arch)


def new_backbone(cfg: TransformerConfig, *, dtype: Any = jnp.float32, param_dtype: Any = jnp.float32,
                 rngs: nnx.Rngs) -> nnx.Module:
    """A randomly initialised backbone of cfg's family (under nnx.eval_shape: an abstract one)."""
    return family_of(cfg).backbone(cfg, dtype=dtype, param_dtype=param_dtype, rngs=rngs)


def parallel_modules() -> tuple[frozenset[str], frozenset[str]]:
    """The column- and row-parallel module names of every registered family."""
    families = [family for _, family in FAMILIES.items()]
    return (frozenset().union(*(f.column_parallel for f in families)),
            frozenset().union(*(f.row_parallel for f in families)))
