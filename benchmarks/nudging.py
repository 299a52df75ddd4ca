"""Tokens per second of co-writing (nudging, reverse) against each model decoding alone.

One batch of questions of one task, written by each method of experiments/nudging.py with its
default models and prompts: a warm-up round (compilation), then --rounds rounds that alternate
the methods, so a change in machine load hits all. Tokens are what the text holds, both writers'
tokens counted by their own tokenizers. CPU time (process, all threads) is given next to wall time:
on a shared machine wall time is an upper bound.

    python benchmarks/nudging.py --task arithmetic --rounds 2 --json out.json
"""
from __future__ import annotations

import argparse
import json
import pathlib
import sys
import time

from w2s.config import apply_overrides, load_config_file
from w2s.generation.nudging import co_write
from w2s.generation.nudging_eval import build_prompt, co_write_config, load_generators, method_spec, questions_of, template
from w2s.runtime import recycle_host_memory

EXPERIMENT = pathlib.Path(__file__).resolve().parents[1] / "experiments" / "nudging.py"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default="arithmetic")
    parser.add_argument("--methods", default="base,nudger,nudging,reverse")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--json")
    args, overrides = parser.parse_known_args(argv)
    print(recycle_host_memory())
    methods = args.methods.split(",")
    cfg = apply_overrides(load_config_file(EXPERIMENT), overrides)
    cfg.methods = tuple(methods)
    generators = load_generators(cfg)
    questions = questions_of(cfg, args.task)[:cfg.generation.batch_size]
    prompts = {role: [build_prompt(g.tokenizer, template(cfg, role, args.task), cfg[role].chat, q.text)
                      for q in questions] for role, g in generators.items()}
    times = {m: [] for m in methods}
    for round_ in range(args.rounds + 1):
        for method in methods:
            driver, helper, _, _ = method_spec(method)
            wall, cpu = time.perf_counter(), time.process_time()
            texts = co_write(generators[driver], generators[helper], prompts[driver], prompts[helper],
                             co_write_config(cfg, method, args.task), progress=False)
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            tokens = sum(t.tokens("driver") + t.tokens("helper") for t in texts)
            if round_:  # round 0 compiles
                times[method].append({"wall_s": wall, "cpu_s": cpu, "tokens": tokens})
    rows = []
    for method, runs in times.items():
        wall = sorted(r["wall_s"] for r in runs)[len(runs) // 2]
        cpu = sorted(r["cpu_s"] for r in runs)[len(runs) // 2]
        tokens = runs[0]["tokens"]
        rows.append({"method": method, "tokens": tokens, "wall_s": wall, "cpu_s": cpu,
                     "tokens_per_s": tokens / wall, "tokens_per_cpu_s": tokens / cpu})
        print(f"{method:8s} {tokens:5d} tokens  {tokens / wall:7.1f} tok/s wall  {tokens / cpu:7.1f} tok/CPU-s")
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps({"task": args.task, "batch": len(questions),
                                                       "rows": rows, "config": cfg.to_dict()}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
