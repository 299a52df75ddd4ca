"""Quickstart: the embedded offline default, end to end on a 2-core CPU.

Weak supervisor: MiniLM-L6's pretrained embeddings alone (no transformer layer), mean-pooled.
Strong model: all 6 layers of MiniLM-L6 (all-MiniLM-L6-v2, shipped in a PyPI wheel).
Task: WordNet category knowledge (is this noun a living thing?), split by synset.

w2s's defaults (w2s.experiment.default_config) are this experiment, so the file sets nothing else;
`w2s config experiments/quickstart.py` lists every key and its value.

    python experiments/quickstart.py                      # or: w2s run experiments/quickstart.py
    python experiments/quickstart.py --config.seeds=0, --config.strong.train.lr=5e-5
"""
import ml_collections

from w2s.experiment import default_config


def get_config() -> ml_collections.ConfigDict:
    return default_config()


if __name__ == "__main__":
    from w2s.cli import run_file_main

    run_file_main(get_config)
