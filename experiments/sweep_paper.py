"""Paper-scale sweep for a GPU pod: the GPT-2, Pythia and Qwen2.5 ladders from the hub on Burns et
al.'s binarized NLP tasks, every method, 3 seeds.

Needs the hub (`pip install -e '.[hub]'`) and a pod: stages shard over one (data, fsdp) mesh of all
devices, across hosts with `--config.distributed.*` or a launcher (README "Multi-host"). Offline it
validates and prints its plan:

    python experiments/sweep_paper.py --dry_run
    python experiments/sweep_paper.py --config.models=gpt2,gpt2-medium --config.tasks=sciq,  # a slice
    python experiments/sweep_paper.py --config.seeds=0,   # and --config.seeds=1, ... on other hosts, one table
"""
import ml_collections

from w2s import ladders


def get_config() -> ml_collections.ConfigDict:
    cfg = ml_collections.ConfigDict()
    cfg.name = "sweep_paper"
    cfg.tasks = ("sciq", "boolq", "cosmos_qa", "amazon_polarity", "anthropic_hh")
    cfg.task_options = ml_collections.ConfigDict(dict(n_train=8000, n_test=2000))
    cfg.seeds = (0, 1, 2)
    cfg.models = ladders.ladder("gpt2") + ladders.ladder("pythia") + ladders.ladder("qwen2.5")  # pairs stay in a ladder
    cfg.self_pairs = True
    cfg.train = ml_collections.ConfigDict(dict(
        batch_size=32, micro_batch_size=32, epochs=2.0, lr=1e-5, weight_decay=0.01, warmup_frac=0.1,
        grad_clip=1.0, max_length=512, eval_every=0, checkpoint_every=100, eval_batch_size=64, log_every=20,
        remat="none", optimizer="adamw"))
    cfg.methods = ("xent", "aux_conf", "product", "bootstrap", "early_stop", "relabel")
    cfg.loss_options = ml_collections.ConfigDict(dict(aux_conf=dict(alpha_max=0.75, warmup_frac=0.2)))
    cfg.method_options = ml_collections.ConfigDict(dict(
        early_stop=dict(holdout_frac=0.2, evals=8), relabel=dict(rounds=2)))
    cfg.linear_probe = False
    cfg.probe_train = ml_collections.ConfigDict(dict(cfg.train.to_dict(), lr=1e-3, epochs=20.0, checkpoint_every=0))
    cfg.mesh = ml_collections.ConfigDict(dict(data=1, fsdp=-1, model=1))
    cfg.distributed = ml_collections.ConfigDict(dict(coordinator_address=None, num_processes=None, process_id=None))
    cfg.output_dir = "results/sweep_paper"
    cfg.checkpoint_dir = "checkpoints"
    cfg.keep_checkpoints = False
    return cfg


if __name__ == "__main__":
    from w2s.cli import run_file_main

    run_file_main(get_config, "sweep")
