"""Active learning on the embedded offline default: which weak labels are worth paying for?

The quickstart experiment (MiniLM embeddings as the weak supervisor, MiniLM-L6 as the strong
student, WordNet living things), with the student choosing which examples of split B the weak
model labels. It shares quickstart's name and output folder, so finished quickstart stages (the
weak labels, the ceiling, the student on all weak labels) are reused, not retrained.

    python experiments/active_learning.py
    python experiments/active_learning.py --config.seeds=0, --config.active.strategies=random,bald
"""
import pathlib

import ml_collections

from w2s.config import load_config_file


def get_config() -> ml_collections.ConfigDict:
    cfg = load_config_file(pathlib.Path(__file__).with_name("quickstart.py"))
    cfg.runner = "active_learning"
    cfg.losses = ("xent",)  # the reference line: the student on all weak labels of split B
    cfg.active = ml_collections.ConfigDict(dict(
        # margin ranks two classes exactly as entropy does, so it is left out here.
        strategies=("random", "entropy", "vote_entropy", "bald", "kcenter", "bald_kcenter"),
        supervisor="weak",  # or a registered supervisor's name, or a labels file of split B (.npy, .json, .csv)
        seed_size=50, query_batch=50, budget=500, rounds=10,
        warm_start=True, train_on="all", epochs=0.0, ensemble_size=8, shortlist=4,
        constructed=2000,  # cases built for arms named <strategy>+constructed, which may ask about them too
        writer=None,  # or a chat model (w2s models list) that writes them from split B's cases (text tasks)
    ))
    return cfg


if __name__ == "__main__":
    from w2s.cli import run_file_main

    run_file_main(get_config)
