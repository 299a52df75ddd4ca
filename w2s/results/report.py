"""`w2s report DIR`: one page about a run, as self-contained HTML (report.html, images inside it) and
as Markdown (report.md, images beside it): its config and what differs from the experiment file's
defaults, library versions and devices, results with intervals, every plot, training curves, timings.

`w2s run` records which experiment file and overrides made the run in <output_dir>/command.json;
that file's get_config() is the run's defaults.
"""
from __future__ import annotations

import json
import pathlib
from typing import Any

from w2s.results import compare, curves, plot
from w2s.checkpoint import write_json_atomic
from w2s.config import load_config_file
from w2s.results.document import Block, Code, Heading, Image, Table, Text, to_html, to_markdown
from w2s.sweeps.results_table import FILENAME as SWEEP_TABLE

COMMAND_FILE = "command.json"  # in a run's output folder: {"config_file", "overrides", "argv"}


def record_command(output_dir: str | pathlib.Path, config_file: str | None, overrides: list[str],
                   argv: list[str]) -> None:
    """What made the run in output_dir, so its report can name the defaults it departs from."""
    write_json_atomic(pathlib.Path(output_dir) / COMMAND_FILE, {
        "config_file": None if config_file is None else str(pathlib.Path(config_file).absolute()),
        "overrides": list(overrides), "argv": list(argv)})


def _jsonable(config: Any) -> Any:
    """As the run stored it: tuples become lists."""
    return json.loads(json.dumps(config))


def defaults_section(config: dict, command: dict, defaults_file: str | None) -> list[Block]:
    """The command line, and each setting that differs from the experiment file's get_config()."""
    blocks: list[Block] = [Heading("Config")]
    if command:
        blocks.append(Text("Command: " + " ".join(command["argv"])))
    source = defaults_file or command.get("config_file")
    if source is None:
        return blocks + [Text("The experiment file is unknown (no command.json): pass --defaults FILE "
                              "to list what differs from its defaults.")]
    if not pathlib.Path(source).is_file():
        return blocks + [Text(f"The experiment file {source} is not there any more: pass --defaults FILE.")]
    defaults = compare.flatten(_jsonable(load_config_file(source).to_dict()))
    current = compare.flatten(config)
    # A sweep stores only the settings its stages depend on: the rest are not compared.
    keys = [k for k in compare.differing_keys([defaults, current]) if k in current]
    rows = [[k, compare.format_value(defaults.get(k, "-")), compare.format_value(current.get(k, "-"))] for k in keys]
    blocks.append(Text(f"Settings that differ from the defaults of {source} ({len(rows)}; the output "
                       "and checkpoint folders, mesh and distributed settings are not listed):"))
    return blocks + ([Table(["key", "default", "this run"], rows, names=3)] if rows else [Text("none.")])


def versions_section(records: list[dict]) -> list[Block]:
    """Library versions, commit and devices of the first seed; any key another seed differs in."""
    versions = [r.get("versions", {}) for r in records]
    if not versions[0]:
        return [Heading("Versions and devices"), Text("Not recorded by this folder's runs.")]
    blocks: list[Block] = [Heading("Versions and devices"),
                           Table(["what", "version or value"], [[k, str(v)] for k, v in versions[0].items()], names=2)]
    differ = compare.differing_keys([compare.flatten(v) for v in versions])
    if differ:
        blocks.append(Text("Seeds ran with different " + ", ".join(differ) + ": see each seed's results.json."))
    return blocks


def timings_section(records: list[dict]) -> list[Block]:
    """Seconds each stage trained, per seed (0 s where a stage was read back from an earlier run)."""
    stages = sorted({s for r in records for s in r.get("timings", {})}, key=curves.stage_order)
    if not stages:
        return [Heading("Timings"), Text("Not recorded by this folder's runs.")]
    rows = [[str(r["seed"]), *(f"{r['timings'][s]:.1f}" if s in r.get("timings", {}) else "-" for s in stages),
             f"{sum(r.get('timings', {}).values()):.1f}"] for r in records]
    return [Heading("Timings"), Text("Seconds of training and evaluation per stage."),
            Table(["seed", *stages, "total"], rows)]


def build(results_dir: pathlib.Path, defaults_file: str | None) -> tuple[str, list[Block]]:
    """Draws the plots and curves into results_dir; returns the page's title and blocks. A sweep's
    folder gets its four figures and the median PGR per method too."""
    folder = compare.load_folder(results_dir)
    folder.label = results_dir.name
    records = sorted(folder.records, key=lambda r: r["seed"])
    config = folder.settings
    title = f"w2s report: {config.get('name', results_dir.name)}"
    command_path = results_dir / COMMAND_FILE
    command = json.loads(command_path.read_text()) if command_path.exists() else {}
    sweep = (results_dir / SWEEP_TABLE).exists()
    pngs = (plot.plot_sweep if sweep else plot.plot_results)(results_dir) + curves.plot_curves(results_dir)
    pngs += sorted(set(results_dir.glob("*.png")) - set(pngs))  # e.g. active learning's curves
    pairs = sorted({f"{r['task']}: {r['weak_model']} → {r['strong_model']}" for r in records})
    blocks: list[Block] = [
        Text(f"Folder {results_dir}: {'; '.join(pairs)}; seeds {', '.join(sorted({str(r['seed']) for r in records}))}."),
        Heading("Results"),
        Text("Means over seeds with 95% bootstrap intervals (metrics.bootstrap_ci)."),
        compare.results_table([folder]),
        *([compare.median_table([folder])] if len(folder.rows) > 1 else []),
        Heading("Plots"),
        *(Image(p, p.stem.replace("_", " ")) for p in pngs),
        *defaults_section(config, command, defaults_file),
        *versions_section(records),
        *timings_section(records),
        Heading("Full config", 3),
        Code(json.dumps(config, indent=2, sort_keys=True)),
    ]
    return title, blocks


def write_report(results_dir: str | pathlib.Path, defaults_file: str | None = None) -> list[pathlib.Path]:
    """Writes report.html and report.md (and the plots they show) into results_dir; returns the two."""
    results_dir = pathlib.Path(results_dir)
    title, blocks = build(results_dir, defaults_file)
    html_path, md_path = results_dir / "report.html", results_dir / "report.md"
    html_path.write_text(to_html(title, blocks))
    md_path.write_text(to_markdown(title, blocks, results_dir))
    return [html_path, md_path]
