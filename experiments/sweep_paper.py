"""Paper-scale sweep for a GPU pod: the GPT-2, Pythia and Qwen2.5 ladders from the hub on Burns et
al.'s binarized NLP tasks, every method, 3 seeds.

Needs the hub (`pip install -e '.[hub]'`) and a pod: stages shard over one (data, fsdp) mesh of all
devices, across hosts with `--config.distributed.*` or a launcher (docs/multihost.md). Offline it
validates and prints its plan:

    python experiments/sweep_paper.py --dry_run
    python experiments/sweep_paper.py --config.models=gpt2,gpt2-medium --config.tasks=sciq,  # a slice
    python experiments/sweep_paper.py --config.seeds=0,   # and --config.seeds=1, ... on other hosts, one table
"""
import ml_collections

from w2s.sweeps import ladders
from w2s.sweeps.sweep import default_config


def get_config() -> ml_collections.ConfigDict:
    cfg = default_config()
    cfg.name = "sweep_paper"
    cfg.tasks = ("sciq", "boolq", "cosmos_qa", "amazon_polarity", "anthropic_hh")
    cfg.task_options = ml_collections.ConfigDict(dict(n_train=8000, n_test=2000))
    cfg.models = ladders.ladder("gpt2") + ladders.ladder("pythia") + ladders.ladder("qwen2.5")  # pairs stay in a ladder
    cfg.self_pairs = True
    cfg.train.update(dict(lr=1e-5, max_length=512, checkpoint_every=100, eval_batch_size=64, log_every=20))
    cfg.methods = ("xent", "aux_conf", "product", "bootstrap", "early_stop", "relabel")
    cfg.method_options.early_stop.evals = 8
    cfg.method_options.relabel.rounds = 2
    cfg.probe_train = ml_collections.ConfigDict(dict(cfg.train.to_dict(), lr=1e-3, epochs=20.0, checkpoint_every=0))
    cfg.mesh.update(dict(data=1, fsdp=-1))
    cfg.output_dir = "results/sweep_paper"
    return cfg


if __name__ == "__main__":
    from w2s.cli import run_file_main

    run_file_main(get_config)
