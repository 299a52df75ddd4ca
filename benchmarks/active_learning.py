"""Label efficiency of active learning: for each strategy, the fewest weak-supervisor queries at
which the student's PGR reaches 95% of the PGR of the student trained on weak labels of the whole
pool (split B). Goal (issue 3): the best strategy needs at most 25% of the pool.

    python experiments/quickstart.py && python experiments/active_learning.py   # the runs (3 seeds)
    python benchmarks/active_learning.py results/quickstart [--json PATH]       # this table

The curve is the mean PGR over seeds at each query count; "first reach" is the first count where
it is at or above the target, "stays from" the first count after which it never drops below.
"""
from __future__ import annotations

import argparse
import pathlib

from w2s.active_learning.active import label_efficiency, load_active_results
from w2s.checkpoint import write_json_atomic

GOAL_POOL_FRAC = 0.25


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results_dir", nargs="?", default="results/quickstart", type=pathlib.Path)
    parser.add_argument("--fraction", type=float, default=0.95, help="of the full-weak-labels PGR")
    parser.add_argument("--json", type=pathlib.Path, help="also write the table here")
    return parser.parse_args(argv)


def _count(queries: int | None, pool: int) -> str:
    return "not reached" if queries is None else f"{queries} ({100 * queries / pool:.1f}%)"


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    results = load_active_results(args.results_dir)
    table = label_efficiency(results, args.fraction)
    seeds = sorted({r["seed"] for r in results})
    any_row = next(iter(table.values()))
    print(f"{args.results_dir}: seeds {seeds}, pool {any_row['pool_size']}; full-weak-labels student PGR "
          f"{any_row['full_weak_pgr']:.3f} (mean over seeds); target {args.fraction:.0%} of it = "
          f"{any_row['target_pgr']:.3f}")
    print(f"{'strategy':<14} {'first reach':>16} {'stays from':>16}  per seed (first reach)")
    for strategy, row in sorted(table.items(), key=lambda kv: (kv[1]["first_reach"] is None, kv[1]["first_reach"])):
        per_seed = ", ".join(f"{s}: {'-' if q is None else q}" for s, q in sorted(row["per_seed"].items()))
        print(f"{strategy:<14} {_count(row['first_reach'], row['pool_size']):>16} "
              f"{_count(row['stays_from'], row['pool_size']):>16}  {per_seed}")
    reached = [row["first_reach"] / row["pool_size"] for row in table.values() if row["first_reach"] is not None]
    best = min(reached) if reached else None
    passed = best is not None and best <= GOAL_POOL_FRAC
    print(f"goal: the best strategy reaches the target within {GOAL_POOL_FRAC:.0%} of the pool -> "
          f"{'PASS' if passed else 'FAIL'} (best {'none' if best is None else f'{best:.1%}'})")
    out = {"results_dir": str(args.results_dir), "seeds": seeds, "fraction": args.fraction,
           "goal_pool_frac": GOAL_POOL_FRAC, "best_pool_frac": best, "passed": passed, "strategies": table}
    if args.json:
        write_json_atomic(args.json, out)
    return out


if __name__ == "__main__":
    main()
