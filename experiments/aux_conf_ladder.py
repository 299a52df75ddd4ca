"""The aux_conf diagnosis (docs/aux_conf.md) on the offline ladder's real tasks: every pair of
experiments/sweep_ladder.py with the diagnosis's aux_conf variants as students (schedules, alpha_max,
thresholds), so each variant is measured at every weak/strong gap the ladder has. The weak models,
ceilings, feature caches and the ladder's own students are reused when the ladder's folder is copied in:

    cp -r results/sweep_ladder results/aux_conf_ladder    # optional: reuse every finished stage
    python experiments/aux_conf_ladder.py
    python experiments/aux_conf_ladder.py --config.tasks=bbc_topic, --config.seeds=0,   # one task and seed
"""
import pathlib

import ml_collections

from w2s.config import load_config_file


def get_config() -> ml_collections.ConfigDict:
    here = pathlib.Path(__file__).parent
    diagnosis = load_config_file(here / "aux_conf_diagnosis.py")
    cfg = load_config_file(here / "sweep_ladder.py")
    cfg.name = "aux_conf_ladder"
    # The two human-labelled tasks: BBC, where the loss helps at the large gaps, and tweets, where it does not.
    cfg.tasks = ("bbc_topic", "tweet_sentiment")
    variants = tuple(name for name in diagnosis.losses if name not in ("xent", "aux_conf"))
    cfg.sweep.methods = ("xent", "aux_conf", *variants)
    for name in variants:
        # The ladder's aux_conf (the same alpha_max and ramp as the quickstart's) with one thing changed.
        cfg.sweep.loss_options[name] = diagnosis.loss_options[name].to_dict()
    cfg.confidence_methods = ("aux_conf", *variants)
    cfg.output_dir = "results/aux_conf_ladder"
    return cfg


if __name__ == "__main__":
    from w2s.cli import run_file_main

    run_file_main(get_config)
