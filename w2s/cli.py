"""The `w2s` command: run an experiment or sweep config, plot results, list tasks and models."""
from __future__ import annotations

import argparse
import os
import pathlib
import sys
from typing import Callable, Sequence

import ml_collections


def run_config(cfg: ml_collections.ConfigDict, overrides: Sequence[str] = ()) -> list[dict]:
    """Applies overrides, runs every seed, prints the results table; returns the results."""
    from w2s import metrics, pipeline
    from w2s.config import apply_overrides

    cfg = apply_overrides(cfg, overrides, pipeline.OPEN_SECTIONS)
    results = pipeline.run_experiment(cfg)
    print()
    print(metrics.format_table(metrics.summarize(results)))
    print(f"\nresults: {cfg.output_dir}   (plot them with: w2s plot {cfg.output_dir})")
    return results


def _run(args: argparse.Namespace, rest: list[str]) -> None:
    from w2s.config import load_config_file

    run_config(load_config_file(args.config), rest)


def _sweep(args: argparse.Namespace, rest: list[str]) -> None:
    from w2s.config import load_config_file
    from w2s.sweep import sweep_config

    sweep_config(load_config_file(args.config), rest, args.dry_run)


def _plot(args: argparse.Namespace, rest: list[str]) -> None:
    from w2s import metrics
    from w2s.plot import plot_results, plot_sweep
    from w2s.results_table import FILENAME, load_records

    _no_extra(rest)
    if (pathlib.Path(args.results_dir) / FILENAME).exists():
        print(metrics.format_pgr_table(metrics.summarize(load_records(args.results_dir))))
        for path in plot_sweep(args.results_dir, args.out):
            print(f"wrote {path}")
        return
    print(metrics.format_table(metrics.summarize(metrics.load_results(args.results_dir))))
    for path in plot_results(args.results_dir, args.out):
        print(f"wrote {path}")
    if any(pathlib.Path(args.results_dir).rglob("active_results.json")):
        from w2s.active import format_curves, load_active_results, plot_active

        print(format_curves(load_active_results(args.results_dir)))
        print(f"wrote {plot_active(args.results_dir)}")


def _config(args: argparse.Namespace, rest: list[str]) -> None:
    from w2s import pipeline, sweep
    from w2s.config import apply_overrides, flat_items, load_config_file

    cfg = load_config_file(args.config)
    cfg = apply_overrides(cfg, rest, (sweep if "tasks" in cfg else pipeline).OPEN_SECTIONS)
    print("\n".join(f"{key} = {value!r}" for key, value in flat_items(cfg)))


def _tasks(args: argparse.Namespace, rest: list[str]) -> None:
    from w2s.tasks import hub_dataset, list_tasks

    _no_extra(rest)
    for name in list_tasks():
        hub = hub_dataset(name)
        print(name + (f"  (needs the HF hub: {hub}; or --config.task_options.path=local files)" if hub else ""))


def _models(args: argparse.Namespace, rest: list[str]) -> None:
    from w2s.models import known_models

    _no_extra(rest)
    print("\n".join(known_models()))
    print("(or any Hugging Face folder or hub id of a bert, gpt2, llama, qwen2 or gpt_neox model)")


def _no_extra(rest: list[str]) -> None:
    if rest:
        raise ValueError(f"unrecognised arguments: {' '.join(rest)}")


OVERRIDES_HELP = ("Any config key can be overridden after the config file: --config.KEY=VALUE, e.g. "
                  "--config.strong.train.lr=1e-5 --config.seeds=0,1 --config.task_options.n_train=2000. "
                  "w2s config FILE lists the keys and their values.")


def main(argv: Sequence[str] | None = None, entry: Callable | None = None) -> int:
    """Errors from bad configs, data or paths print one clear line (W2S_DEBUG=1 shows the traceback)."""
    parser = argparse.ArgumentParser(prog="w2s", description="Weak-to-strong generalization experiments.",
                                     epilog=OVERRIDES_HELP)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run an experiment config (any key can be overridden, see below)",
                         epilog=OVERRIDES_HELP)
    run.add_argument("config", help="a Python config file with get_config(), e.g. experiments/quickstart.py")
    run.set_defaults(fn=_run)
    sweep = sub.add_parser("sweep", help="run a sweep config: every weak/strong pair, method and seed",
                           epilog=OVERRIDES_HELP)
    sweep.add_argument("config", help="a Python config file with get_config(), e.g. experiments/sweep_offline.py")
    sweep.add_argument("--dry_run", action="store_true", help="list the runs and what is left; train nothing")
    sweep.set_defaults(fn=_sweep)
    plot = sub.add_parser("plot", help="plot PGR and accuracies of the results under a directory (or of a sweep)")
    plot.add_argument("results_dir")
    plot.add_argument("--out", default=None, help="where to write the PNGs (default: RESULTS_DIR)")
    plot.set_defaults(fn=_plot)
    config = sub.add_parser("config", help="print a config's keys and values, after any overrides",
                            epilog=OVERRIDES_HELP)
    config.add_argument("config", help="a Python config file with get_config()")
    config.set_defaults(fn=_config)
    sub.add_parser("tasks", help="list registered tasks").set_defaults(fn=_tasks)
    sub.add_parser("models", help="list offline model names").set_defaults(fn=_models)
    args, rest = parser.parse_known_args(argv)
    if args.command in ("run", "sweep"):  # before JAX starts: see w2s.runtime
        from w2s.runtime import freeze_startup_objects, recycle_host_memory

        recycle_host_memory()
        import w2s.pipeline, w2s.sweep  # noqa: E401, F401  what a run imports, so that it is frozen too

        freeze_startup_objects()
    try:
        (entry or args.fn)(args, rest)
    except (ValueError, FileNotFoundError, KeyError, AttributeError) as e:
        if os.environ.get("W2S_DEBUG"):
            raise
        print(f"w2s: error: {e}", file=sys.stderr)
        return 2
    return 0


def run_file_main(get_config: Callable[[], ml_collections.ConfigDict], command: str = "run") -> None:
    """`python experiments/x.py --config.a=b` runs that config (command="sweep": a sweep, which also
    takes --dry_run), with the same error handling."""
    def entry(args: argparse.Namespace, rest: list[str]) -> None:
        if command == "sweep":
            from w2s.sweep import sweep_config

            sweep_config(get_config(), rest, args.dry_run)
        else:
            run_config(get_config(), rest)

    sys.exit(main([command, "-"] + sys.argv[1:], entry=entry))


if __name__ == "__main__":
    sys.exit(main())
