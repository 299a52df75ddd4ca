"""Quickstart: the embedded offline default, end to end on a 2-core CPU.

Weak supervisor: MiniLM-L6's pretrained embeddings alone (no transformer layer), mean-pooled.
Strong model: all 6 layers of MiniLM-L6 (all-MiniLM-L6-v2, shipped in a PyPI wheel).
Task: WordNet category knowledge (is this noun a living thing?), split by synset.

    python experiments/quickstart.py                      # or: w2s run experiments/quickstart.py
    python experiments/quickstart.py --config.seeds=0, --config.strong.train.lr=5e-5
"""
import ml_collections


def train_config(**overrides) -> ml_collections.ConfigDict:
    cfg = ml_collections.ConfigDict(dict(
        batch_size=32, micro_batch_size=32, epochs=2.0, lr=5e-5, weight_decay=0.01, warmup_frac=0.1,
        grad_clip=1.0, max_length=16, eval_every=50, checkpoint_every=50, eval_batch_size=256, log_every=10,
        remat="none", optimizer="adamw",
    ))
    cfg.update(overrides)
    return cfg


def get_config() -> ml_collections.ConfigDict:
    cfg = ml_collections.ConfigDict()
    cfg.name = "quickstart"
    cfg.task = "wordnet_living"
    cfg.task_options = ml_collections.ConfigDict(dict(n_train=4000, n_test=2000))
    cfg.seeds = (0, 1, 2)
    cfg.weak = ml_collections.ConfigDict(dict(
        model="minilm", num_layers=0, pretrained=True, pooling="mean", dtype="float32",
        train=train_config(lr=1e-3, epochs=3.0)))
    cfg.strong = ml_collections.ConfigDict(dict(
        model="minilm", num_layers=None, pretrained=True, pooling=None, dtype="float32", train=train_config(lr=1e-4)))
    cfg.losses = ("xent", "aux_conf")
    cfg.loss_options = ml_collections.ConfigDict(dict(aux_conf=dict(alpha_max=0.75, warmup_frac=0.2)))
    cfg.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1, model=1))
    # None: a single process, or whatever the launcher (srun, a TPU pod) tells JAX; see README "Multi-host".
    cfg.distributed = ml_collections.ConfigDict(dict(coordinator_address=None, num_processes=None, process_id=None))
    cfg.output_dir = "results/quickstart"
    cfg.checkpoint_dir = "checkpoints"
    cfg.keep_checkpoints = False  # a finished stage's orbax checkpoints are deleted (~270 MB each)
    return cfg


if __name__ == "__main__":
    from w2s.cli import run_file_main

    run_file_main(get_config)
