"""A student that models its supervisor's mistakes, on frozen features.

Each model holds two predictions per case: the true label, p(y=1 | x) = sigmoid(w.x + b), and
what the supervisor will say, through a learned, input-dependent transition: for each true class
c a flip probability rho_c(x) = sigmoid(v_c.x + a_c) that the supervisor answers the other class.
It trains on the supervisor's answers through the transition (forward correction, Patrini et al.
2017, with an instance-dependent transition) and is read by its true-label head.

A transition can explain any answer, so what tells the two heads apart is a prior: flips are
rare (a_c is pulled towards logit(flip_prior)) and depend on the input only as far as the
answers demand (v_c is more strongly regularised than w). An ensemble of such models, each fit
to a bootstrap resample from its own random start, holds competing hypotheses about where the
supervisor errs; `w2s.active_learning.strategies`' "diagnostic" strategy asks where they disagree.
"""
from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax


@dataclasses.dataclass(frozen=True)
class MistakeSettings:
    """flip_l2 and prior_weight chosen once on a synthetic supervisor (tests/test_diagnostic.py's:
    it errs on a half-space) among four settings, by how well the transition finds its errors; l2
    among 1e-3, 1e-2, 0.1 by plain heads' accuracy on held-out ground truth of split A
    (wordnet_living, seed 0, MiniLM-L6 features). No test split was used."""

    steps: int = 300
    lr: float = 0.05
    l2: float = 1e-1  # on the true-label head
    flip_l2: float = 1e-3  # on the transition's input dependence
    flip_prior: float = 0.1  # the flip rate the transition starts from and is pulled towards
    prior_weight: float = 0.1
    init_scale: float = 0.1  # spread of the members' random starts


@dataclasses.dataclass(frozen=True)
class Predictions:
    """Of M models on N cases."""

    truth: np.ndarray  # [M, N, 2] the true-label heads' class probabilities
    supervisor_right: np.ndarray  # [M, N] each model's probability that the supervisor answers the truth


def standardiser(reference: np.ndarray):
    """Features scaled by `reference`'s mean and spread (unlabelled data may be used: no labels)."""
    mean, std = reference.mean(0), reference.std(0) + 1e-6
    return lambda x: ((x - mean) / std).astype(np.float32)


def _heads(params: dict, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """True class-1 probability [N] and flip probabilities [N, 2] (per true class)."""
    return jax.nn.sigmoid(x @ params["w"] + params["b"]), jax.nn.sigmoid(x @ params["v"] + params["a"])


def supervisor_class1(p1: jax.Array, rho: jax.Array) -> jax.Array:
    """P(supervisor says 1) = P(y=1)(1 - rho_1) + P(y=0) rho_0: the forward-corrected prediction."""
    return p1 * (1.0 - rho[..., 1]) + (1.0 - p1) * rho[..., 0]


def _loss(params: dict, x: jax.Array, answers1: jax.Array, weights: jax.Array, flips: bool,
          s: MistakeSettings) -> jax.Array:
    p1, rho = _heads(params, x)
    q1 = supervisor_class1(p1, rho) if flips else p1
    q1 = jnp.clip(q1, 1e-6, 1 - 1e-6)
    nll = -(answers1 * jnp.log(q1) + (1 - answers1) * jnp.log(1 - q1))
    fit = jnp.sum(weights * nll) / jnp.sum(weights)
    reg = s.l2 * jnp.sum(params["w"] ** 2)
    if flips:
        prior = jnp.log(s.flip_prior / (1 - s.flip_prior))
        reg += s.flip_l2 * jnp.sum(params["v"] ** 2) + s.prior_weight * jnp.sum((params["a"] - prior) ** 2)
    return fit + reg


@functools.partial(jax.jit, static_argnames=("flips", "s"))
def _fit_members(inits: dict, x: jax.Array, answers1: jax.Array, weights: jax.Array, flips: bool,
                 s: MistakeSettings) -> dict:
    """Adam, full batch, `s.steps` steps; vmapped over members (inits and weights carry a leading M)."""
    opt = optax.adam(s.lr)

    def fit_one(params, w):
        def step(carry, _):
            p, state = carry
            grads = jax.grad(_loss)(p, x, answers1, w, flips, s)
            updates, state = opt.update(grads, state)
            return (optax.apply_updates(p, updates), state), None

        (params, _), _ = jax.lax.scan(step, (params, opt.init(params)), None, length=s.steps)
        return params

    return jax.vmap(fit_one)(inits, weights)


_BUCKET = 512


def fit(features: np.ndarray, answers: np.ndarray, size: int, rng: np.random.Generator, *, flips: bool = True,
        bootstrap: bool = True, settings: MistakeSettings = MistakeSettings()) -> dict:
    """Parameters of `size` models fit to the supervisor's answers [L, 2] on standardised `features`
    [L, H]: each to a bootstrap resample (as weights) from its own random start. flips=False fits
    plain logistic regression on the answers (the transition fixed at the identity)."""
    n, h = features.shape
    weights = (np.stack([np.bincount(rng.integers(0, n, n), minlength=n) for _ in range(size)])
               if bootstrap else np.ones((size, n)))
    prior = np.log(settings.flip_prior / (1 - settings.flip_prior))
    inits = {
        "w": rng.normal(0, settings.init_scale, (size, h)), "b": np.zeros(size),
        "v": np.zeros((size, h, 2)), "a": np.full((size, 2), prior),
    }
    inits = jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), inits)
    # Padded to a multiple of _BUCKET rows of weight 0, so growing labelled sets share compilations.
    pad = -n % _BUCKET
    x = np.pad(features, ((0, pad), (0, 0)))
    params = _fit_members(inits, jnp.asarray(x, jnp.float32), jnp.asarray(np.pad(answers[:, 1], (0, pad)), jnp.float32),
                          jnp.asarray(np.pad(weights, ((0, 0), (0, pad))), jnp.float32), flips, settings)
    return jax.tree.map(np.asarray, params)


def predict(params: dict, features: np.ndarray) -> Predictions:
    """The models' two predictions on standardised `features` [N, H]."""
    p1, rho = jax.vmap(_heads, in_axes=(0, None))(params, jnp.asarray(features))
    p1, rho = np.asarray(p1, np.float64), np.asarray(rho, np.float64)
    # The supervisor is right with probability 1 - rho_y under the model's belief about y.
    right = p1 * (1 - rho[..., 1]) + (1 - p1) * (1 - rho[..., 0])
    return Predictions(truth=np.stack([1 - p1, p1], -1), supervisor_right=right)
