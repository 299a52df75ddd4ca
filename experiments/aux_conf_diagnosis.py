"""Why the auxiliary confidence loss hurts on the quickstart (docs/aux_conf.md): the quickstart's
weak model, ceiling and task, with students that vary one thing of aux_conf each, all trained in one
run that shares the weak and ceiling stages. Students evaluate at steps 50, 100 and 125 of 125
(few, as each evaluation predicts 4,000 examples: the test split and the student's training split).

    python experiments/aux_conf_diagnosis.py --config.output_dir=/tmp/aux_conf/main
    # run length: the same students for 2x and 4x the epochs (the ceiling trains as long too)
    python experiments/aux_conf_diagnosis.py --config.strong.train.epochs=4 --config.strong.train.eval_every=100 \\
        --config.losses=xent,aux_conf --config.output_dir=/tmp/aux_conf/epochs4
"""
import pathlib

import ml_collections

from w2s.config import load_config_file

# Each student: the quickstart's aux_conf (alpha_max 0.75, a linear ramp over the first 20% of
# training, the threshold over the effective batch of 32) with one thing changed.
VARIANTS = {  # in the order they train, the priorities: schedules, alpha_max, thresholds
    "aux_conf_ramp100": dict(warmup_frac=1.0),
    # OpenAI's public code: alpha = alpha_max * step_frac until its warmup (0.1), then alpha_max.
    "aux_conf_openai": dict(warmup_frac=1.0, full_after_frac=0.1),
    "aux_conf_alpha50": dict(alpha_max=0.5),
    "aux_conf_ramp50": dict(warmup_frac=0.5),
    "aux_conf_delay50": dict(delay_frac=0.5),  # alpha 0 for the first half, then the 20% ramp
    "aux_conf_alpha25": dict(alpha_max=0.25),
    "aux_conf_thr8": dict(threshold_batch=8),  # OpenAI's code thresholds each micro-batch
    "aux_conf_thr_ema": dict(threshold_decay=0.9),  # a running estimate over ~10 batches
}


def get_config() -> ml_collections.ConfigDict:
    cfg = load_config_file(pathlib.Path(__file__).with_name("quickstart.py"))
    cfg.name = "aux_conf_diagnosis"
    cfg.strong.train.eval_every = 50  # the quickstart's: its finished ceilings and students are reused
    cfg.losses = ("xent", "aux_conf", *VARIANTS)
    for name, options in VARIANTS.items():
        cfg.loss_options[name] = dict(cfg.loss_options.aux_conf, loss="aux_conf", **options)
    cfg.output_dir = "results/aux_conf_diagnosis"
    return cfg


if __name__ == "__main__":
    from w2s.cli import run_file_main

    run_file_main(get_config)
