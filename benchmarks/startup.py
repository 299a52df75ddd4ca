"""The one-time costs the first stage of a run pays, each timed on its own in this fresh process:
building the task, the first tokenizer load, and the first and second build of the weak model
(the first also runs JAX's first eager operations). Run it in the install you want to know about
(a torch-free one, as `make quickstart` makes, or one with torch, which `transformers` then imports).

    python benchmarks/startup.py [--config experiments/quickstart.py] [--config.x=y ...] [--json PATH]
"""
from __future__ import annotations

import time
from typing import Any, Callable

from harness import host_cpu
from pipeline import experiment_config
from w2s.checkpoint import write_json_atomic
from w2s.runtime import freeze_startup_objects, host_memory, recycle_host_memory


def timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> dict:
    args, overrides, cfg = experiment_config(argv, __doc__.split("\n\n")[0])
    print(f"host memory: {recycle_host_memory()}")

    import transformers  # as the pipeline does on import; not counted, like every import

    from w2s.models import resolve_model_dir
    from w2s.stages import ModelSpec
    from w2s.tasks import load_task

    freeze_startup_objects()  # as the `w2s` command does once it has imported what a run needs
    weak = cfg.weak
    spec = ModelSpec.from_config(weak)
    build = lambda: spec.build(cfg.seeds[0])
    seconds = {
        "task": timed(lambda: load_task(cfg.task, cfg.seeds[0], **dict(cfg.task_options))),
        "first tokenizer load": timed(lambda: transformers.AutoTokenizer.from_pretrained(resolve_model_dir(weak.model))),
        "first weak model build": timed(build),
        "second weak model build": timed(build),
    }
    print(f"config {args.config}: task {cfg.task}, weak model {weak.model} (num_layers {weak.num_layers}); "
          f"host: {host_cpu()}")
    for name, s in seconds.items():
        print(f"{name:<26}{s:>7.2f} s")
    out = {"config": args.config, "overrides": overrides, "seconds": seconds, "host_memory": host_memory(),
           "host_cpu": host_cpu()}
    if args.json:
        write_json_atomic(args.json, out)
    return out


if __name__ == "__main__":
    main()
