"""w2s: weak-to-strong generalization experiments in JAX."""

__version__ = "0.1.0"
