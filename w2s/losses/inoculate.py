"""Inoculation prompting for weak-to-strong: cross-entropy against the weak labels, but every
training input starts with a note that its label comes from an unreliable supervisor, and test
inputs do not (Tan et al. 2025, Wichers et al. 2025: a behaviour the training prompt asks for or
explains is less learned as the model's own). The student may then attribute the weak labels' errors
to the note instead of learning them. `inoculate_spelling` names the feature the offline default's
weak model (its word-piece embeddings alone) decides by; any student may set its own text with
loss_options.<student>.train_prefix."""
import jax

from w2s.losses import LOSSES, TRAIN_PREFIXES, soft_cross_entropy

TRAIN_PREFIXES.add("inoculate", "(label from an unreliable weak supervisor, often wrong) ")
TRAIN_PREFIXES.add("inoculate_spelling", "(label from a weak supervisor that judges words by their spelling, "
                                         "not their meaning) ")


@LOSSES.register("inoculate")
def inoculate_loss(logits: jax.Array, targets: jax.Array) -> jax.Array:
    return soft_cross_entropy(logits, targets)


LOSSES.add("inoculate_spelling", inoculate_loss, origin=f"{__name__}.inoculate_loss")
