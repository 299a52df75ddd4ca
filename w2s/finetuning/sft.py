"""Supervised finetuning of causal LMs on (prompt, completion) chats, and their evaluation.

Training goes through w2s.train's loop (sharded, jitted step, resumable from orbax checkpoints, the
same batch order on resume): a chat's tokens are its prompt as the model's chat template renders it
(with the generation prompt) followed by the completion's turn, and the loss is the next-token
cross-entropy on the completion's tokens only (its end-of-turn token included, so the model learns
to stop). Batches are cut to the power-of-two bucket of their longest row (w2s.data.bucket_width),
so a batch of short chats computes over few positions.

Evaluation: `ChatSampler` generates completions with w2s.generation.generate (greedy or sampled) and
`completion_logprobs` scores given completions. `save_params`/`load_params` carry a finetuned
model from one stage to the next (experiments/abduction.py trains rounds from the last round's).
"""
from __future__ import annotations

import dataclasses
import functools
import json
import pathlib
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from tqdm.auto import tqdm

from w2s import sharding
from w2s.checkpoint import read_json, read_npz, write_json_atomic, write_npz_atomic
from w2s.config import ConfigError, refuse_changes, with_defaults
from w2s.data import bucket_width
from w2s.generation.generate import Completion, GenerationConfig, Generator
from w2s.models.causal_lm import CausalLM, build_causal_lm, eos_ids
from w2s.train import TrainConfig, train

IGNORE = -1  # the target of a position whose next token is not trained on


@dataclasses.dataclass(frozen=True)
class Chat:
    """A prompt (chat messages: dicts with 'role' and 'content') and, to train on or score, the
    assistant's completion."""

    messages: tuple[Mapping[str, str], ...]
    completion: str | None = None


def chat(user: str, system: str | None = None, completion: str | None = None) -> Chat:
    """A one-turn chat; without `system` the template's default system prompt (if any) applies."""
    messages = ({"role": "system", "content": system},) if system is not None else ()
    return Chat((*messages, {"role": "user", "content": user}), completion)


def encode_chat(tokenizer: Any, example: Chat) -> tuple[list[int], list[int]]:
    """(prompt ids, completion ids): the prompt rendered by the tokenizer's chat template up to the
    assistant's turn, and the rest of the rendered chat. Each is tokenized on its own, as a
    generator sees a prompt and then writes after it."""
    messages = [dict(m) for m in example.messages]
    prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    prompt_ids = tokenizer.encode(prompt, add_special_tokens=False)
    if example.completion is None:
        return prompt_ids, []
    full = tokenizer.apply_chat_template(messages + [{"role": "assistant", "content": example.completion}],
                                         tokenize=False)
    if not full.startswith(prompt):
        raise ConfigError("the chat template renders a chat with its completion not as the prompt followed "
                          "by the completion; such a template cannot be trained on completions only.")
    return prompt_ids, tokenizer.encode(full[len(prompt):], add_special_tokens=False)


@dataclasses.dataclass(frozen=True, eq=False)
class ChatTokens:
    """Tokenized chats as a source of training batches (w2s.train): input ids, attention mask and
    `targets`, the next token at each completion position and IGNORE elsewhere. Chats longer than
    `max_length` lose the end of their completion; a prompt that fills max_length is refused."""

    ids: tuple[np.ndarray, ...]
    prompt_lengths: np.ndarray
    max_length: int
    pad_id: int

    @classmethod
    def of(cls, tokenizer: Any, chats: Sequence[Chat], max_length: int) -> ChatTokens:
        if not chats:
            raise ConfigError("no chats to tokenize.")
        ids, lengths = [], []
        for i, example in enumerate(chats):
            prompt, completion = encode_chat(tokenizer, example)
            if len(prompt) >= max_length:
                raise ConfigError(f"chat {i}: its prompt has {len(prompt)} tokens; raise max_length "
                                  f"({max_length}) above that.")
            ids.append(np.asarray((prompt + completion)[:max_length], np.int32))
            lengths.append(len(prompt))
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        return cls(tuple(ids), np.asarray(lengths, np.int64), max_length, pad)

    def __len__(self) -> int:
        return len(self.ids)

    def take(self, indices: np.ndarray) -> ChatTokens:
        return dataclasses.replace(self, ids=tuple(self.ids[i] for i in indices),
                                   prompt_lengths=self.prompt_lengths[indices])

    def batch(self, indices: np.ndarray, widest: Callable[[int], int] = lambda n: n) -> dict[str, np.ndarray]:
        """Rows `indices`, right-padded to the bucket of the batch's longest row."""
        rows = [self.ids[i] for i in indices]
        width = bucket_width(widest(max(len(r) for r in rows)), self.max_length)
        input_ids = np.full((len(rows), width), self.pad_id, np.int32)
        mask = np.zeros((len(rows), width), np.int32)
        targets = np.full((len(rows), width), IGNORE, np.int32)
        for row, (i, ids) in enumerate(zip(indices, rows)):
            input_ids[row, :len(ids)], mask[row, :len(ids)] = ids, 1
            start = self.prompt_lengths[i]  # position start - 1 predicts the completion's first token
            targets[row, start - 1:len(ids) - 1] = ids[start:]
        return {"input_ids": input_ids, "attention_mask": mask, "targets": targets}


def token_logprobs(logits: jax.Array, targets: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(log-probability of each target token, 1 where it counts) for [B, T, V] logits and [B, T]
    targets with IGNORE where nothing is predicted."""
    counted = targets != IGNORE
    logp = -optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32),
                                                              jnp.where(counted, targets, 0))
    return jnp.where(counted, logp, 0.0), counted.astype(jnp.float32)


def next_token_loss(logits: jax.Array, targets: jax.Array) -> jax.Array:
    """Mean cross-entropy over the counted tokens of a (micro-)batch, as transformers' causal-LM
    loss with labels -100 outside the completion. Micro-batches of an accumulated step weigh equally."""
    logp, counted = token_logprobs(logits, targets)
    return -jnp.sum(logp) / jnp.maximum(jnp.sum(counted), 1.0)


@dataclasses.dataclass(frozen=True)
class NextTokenTable:
    """The objective (a w2s.losses.StepObjective) the train step computes for SFT: one loss, no
    options, no threshold."""

    threshold_batch: int = 0

    def state(self, loss: "NextTokenLoss") -> dict[str, Any]:
        return {"kind": np.int32(0), "options": {}, "threshold_decay": np.float32(0)}

    def needs_threshold(self, kind: jax.Array) -> bool:
        return False

    def __call__(self, logits: jax.Array, targets: jax.Array, *, step_frac: jax.Array,
                 class1_threshold: jax.Array, state: Mapping[str, Any]) -> jax.Array:
        return next_token_loss(logits, targets)

    def thresholds(self, logits: jax.Array, targets: jax.Array, running: jax.Array, step: jax.Array,
                   state: Mapping[str, Any]) -> tuple[jax.Array, jax.Array]:
        return jnp.zeros(()), running


@dataclasses.dataclass(frozen=True)
class NextTokenLoss:
    """The objective w2s.train trains SFT with: its step computes `table`."""

    name: str = "next_token"
    table: NextTokenTable = NextTokenTable()

    def __call__(self, logits: jax.Array, targets: jax.Array, *, step_frac: float = 0.0,
                 class1_threshold: float = 0.0) -> jax.Array:
        return next_token_loss(logits, targets)


def finetune(model: CausalLM, tokenizer: Any, chats: Sequence[Chat], cfg: TrainConfig, *,
             mesh: jax.sharding.Mesh, seed: int, checkpoint_dir: str | None = None, desc: str = "sft",
             evaluate: Callable[[nnx.Module], dict[str, float]] | None = None, show_progress: bool = True,
             checkpoint_last: bool = True) -> tuple[CausalLM, list[dict]]:
    """Trains `model` on the chats' completions with w2s.train (cfg.max_length bounds a chat; evaluate
    runs every cfg.eval_every steps); resumes from `checkpoint_dir`. Returns the model and history."""
    return train(model, ChatTokens.of(tokenizer, chats, cfg.max_length), None, cfg, loss=NextTokenLoss(),
                 mesh=mesh, seed=seed, checkpoint_dir=checkpoint_dir, desc=desc, evaluate=evaluate,
                 show_progress=show_progress, checkpoint_last=checkpoint_last)


@functools.lru_cache(maxsize=4)
def _compiled_scores(graphdef: Any) -> Callable:
    def scores(params, ids, mask, targets):
        logp, counted = token_logprobs(nnx.merge(graphdef, params)(ids, mask), targets)
        return jnp.sum(logp, axis=1), jnp.sum(counted, axis=1)

    return jax.jit(scores)


def completion_logprobs(model: CausalLM, tokenizer: Any, chats: Sequence[Chat], *, max_length: int,
                        batch_size: int = 16, mesh: jax.sharding.Mesh | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(summed log-probability of each chat's completion given its prompt, its token count): the
    completion's tokens up to max_length, its end-of-turn token included. Batches are padded to
    `batch_size` rows and the bucket of their longest chat, so few shapes compile."""
    tokens = ChatTokens.of(tokenizer, chats, max_length)
    graphdef, params = nnx.split(model)
    if mesh is not None:
        params = jax.device_put(params, sharding.state_shardings(mesh, params))
    scores = _compiled_scores(graphdef)
    total, count = [], []
    for start in range(0, len(tokens), batch_size):
        real = np.arange(start, min(start + batch_size, len(tokens)))
        rows = np.concatenate([real, np.full(batch_size - len(real), real[0])])  # padding rows repeat a real one
        batch = tokens.batch(rows)
        s, c = scores(params, batch["input_ids"], batch["attention_mask"], batch["targets"])
        total.append(np.asarray(s)[:len(real)])
        count.append(np.asarray(c)[:len(real)])
    return np.concatenate(total), np.concatenate(count).astype(np.int64)


class ChatSampler:
    """Completions of chat prompts with one w2s.generation.generate.Generator of `rows` rows, reused across
    models of the same shape (`load`), so its programs compile once."""

    def __init__(self, model: CausalLM, tokenizer: Any, eos_ids: Sequence[int], *, rows: int = 16,
                 max_length: int = 256):
        self.tokenizer = tokenizer
        self.generator = Generator(model, tokenizer, rows=rows, max_length=max_length, eos_ids=eos_ids,
                                   add_special_tokens=False)

    def load(self, model: CausalLM) -> None:
        self.generator.load(model)

    def complete(self, chats: Sequence[Chat], cfg: GenerationConfig, *, desc: str | None = None) -> list[Completion]:
        """One completion per chat (its `completion` is ignored), `rows` chats at a time; a sampled
        batch draws with seed cfg.seed + its index, so results do not depend on what ran before.
        `desc`: a progress bar of chats answered, under that name."""
        prompts = [encode_chat(self.tokenizer, dataclasses.replace(c, completion=None))[0] for c in chats]
        rows, out = self.generator.rows, []
        with tqdm(total=len(prompts), desc=desc, unit="chat", disable=desc is None, leave=False) as bar:
            for b, start in enumerate(range(0, len(prompts), rows)):
                batch = prompts[start:start + rows]
                out += self.generator.generate_ids(batch, dataclasses.replace(cfg, seed=cfg.seed + b))
                bar.update(len(batch))
        return out


class PretrainedChat:
    """A chat model loaded on first use, once: fresh copies of it to finetune, its tokenizer, and one
    ChatSampler that every copy is loaded into (so generation compiles once)."""

    def __init__(self, name: str, *, rows: int, max_length: int):
        self.name, self.rows, self.max_length = name, rows, max_length

    @functools.cached_property
    def _loaded(self) -> tuple[CausalLM, Any]:
        return build_causal_lm(self.name)

    @property
    def tokenizer(self) -> Any:
        return self._loaded[1]

    @functools.cached_property
    def sampler(self) -> ChatSampler:
        model, tokenizer = self._loaded
        return ChatSampler(model, tokenizer, eos_ids(self.name, tokenizer), rows=self.rows, max_length=self.max_length)

    def fresh(self) -> CausalLM:
        """The pretrained model with parameters in new buffers: training donates its parameters'
        buffers, and the next training (another condition, chain or seed) starts from these again."""
        graphdef, state = nnx.split(self._loaded[0])
        return nnx.merge(graphdef, jax.tree.map(jnp.copy, state))


# Settings a rerun of a finetuning experiment may change: where results go, which seeds and
# conditions run, whether bars are drawn.
RUNTIME_KEYS = ("output_dir", "checkpoint_dir", "seeds", "conditions", "progress")


def check_results_config(out: pathlib.Path, cfg: Any, runtime: Sequence[str] = RUNTIME_KEYS,
                         added: Mapping[str, Any] | None = None) -> None:
    """The results in `out` belong to one config: a rerun whose settings differ in any key but the
    `runtime` ones is refused, naming the changed leaf keys; otherwise the config is recorded there.
    `added`: keys added to the config after results may have been written, with the value that
    reproduces what ran before them (a stored config without them counts as having that value)."""
    path = out / "config.json"
    current = json.loads(json.dumps(cfg.to_dict()))
    if path.exists():
        stored = with_defaults(read_json(path), dict(added or {}))
        stored, mine = ({k: v for k, v in side.items() if k not in runtime} for side in (stored, current))
        refuse_changes(stored, mine, f"{out} holds results of other settings")
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, current)


def save_params(model: nnx.Module, path: str | pathlib.Path) -> None:
    """The model's parameters as an .npz (written atomically), keyed by their path in the model."""
    flat = jax.tree_util.tree_flatten_with_path(nnx.state(model, nnx.Param).to_pure_dict())[0]
    write_npz_atomic(path, **{jax.tree_util.keystr(k): np.asarray(v) for k, v in flat})


def load_params(model: nnx.Module, path: str | pathlib.Path) -> bool:
    """Puts the parameters save_params wrote into `model` (of the same structure); False when the
    file is missing or damaged (then reported), so the stage that wrote it runs again."""
    state = nnx.state(model, nnx.Param)
    pure = state.to_pure_dict()
    leaves, treedef = jax.tree_util.tree_flatten_with_path(pure)
    arrays = read_npz(path, [jax.tree_util.keystr(k) for k, _ in leaves])
    if arrays is None:
        return False
    values = [jnp.asarray(arrays[jax.tree_util.keystr(k)], v.dtype) for k, v in leaves]
    nnx.replace_by_pure_dict(state, jax.tree_util.tree_unflatten(treedef, values))
    nnx.update(model, state)
    return True
