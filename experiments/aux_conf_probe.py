"""The aux_conf diagnosis (docs/aux_conf.md) with linear probes: the quickstart's task and pair
(MiniLM-L6's mean-pooled embeddings -> its 6 layers), every stage a linear head on frozen features,
so the students of experiments/aux_conf_diagnosis.py (and reverse_xent, trust_filter) train in
seconds once each seed's features are computed. Students evaluate every 125 of their 1,250 steps.

    python experiments/aux_conf_probe.py --config.seeds=0,1,2 --config.output_dir=/tmp/aux_conf/probe
    python experiments/aux_conf_report.py /tmp/aux_conf/probe --curves
"""
import pathlib

import ml_collections

from w2s.config import load_config_file


def get_config() -> ml_collections.ConfigDict:
    here = pathlib.Path(__file__).parent
    diagnosis = load_config_file(here / "aux_conf_diagnosis.py")
    cfg = load_config_file(here / "sweep_offline.py")
    cfg.name = "aux_conf_probe"
    cfg.models = ("minilm-l0-mean", "minilm-l6")
    cfg.methods = (*diagnosis.losses, "reverse_xent", "trust_filter")
    cfg.loss_options = diagnosis.loss_options
    cfg.mode = "probe"
    cfg.probe_train.eval_every = 125
    cfg.output_dir = "results/aux_conf_probe"
    return cfg


if __name__ == "__main__":
    from w2s.cli import run_file_main

    run_file_main(get_config)
