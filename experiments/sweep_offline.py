"""Offline sweep: the MiniLM first-k ladder on WordNet, 3 seeds, on a 2-core CPU in under half an hour (28 min measured).

Rungs: MiniLM-L6's embeddings alone (mean-pooled), its first 2 layers (mean-pooled), all 6 layers;
every pair weak < strong; data and training as in the quickstart, so its pair (embeddings -> all 6
layers) repeats the quickstart's students. w2s's sweep defaults (w2s.sweeps.sweep.default_config) are
this sweep, so the file sets only its name. Methods: all of w2s.sweeps.sweep but `product` (add it with
--config.methods=...,product for about 5 more minutes). With 2,000 words instead of 4,000 the
students did not beat their supervisors (seed 0: PGR -0.25 and 0.02 for xent), so the data stays.

    python experiments/sweep_offline.py --dry_run        # the runs and stages, nothing trained
    python experiments/sweep_offline.py                  # or: w2s sweep experiments/sweep_offline.py
    w2s plot results/sweep_offline
"""
import ml_collections

from w2s.sweeps.sweep import default_config


def get_config() -> ml_collections.ConfigDict:
    cfg = default_config()
    cfg.name = "sweep_offline"
    cfg.output_dir = "results/sweep_offline"
    return cfg


if __name__ == "__main__":
    from w2s.cli import run_file_main

    run_file_main(get_config)
