"""A whole weak-to-strong experiment, w2s against a PyTorch implementation of the same experiment.

    python benchmarks/end_to_end.py --setting smollm2 --rounds 2 --json out.json
    python benchmarks/end_to_end.py --setting quickstart --rounds 1 --config.task_options.n_train=400

Each round runs both sides, alternating (w2s, torch, w2s, torch, ...), each in a fresh process, so
both pay their start-up and first-use costs and a change in machine load hits both. Both sides train
the same stages (weak on ground truth of split A, its soft labels of split B, the ceiling on ground
truth of B, one student per loss on the weak labels) on the same batches: the task, the split, the
batch order (w2s.data.batch_indices) and the padded token batches (w2s.data.TextRows) are w2s's, and
so are the hyper-parameters (AdamW after global-norm clipping, linear warm-up then cosine decay,
soft cross-entropy, Burns et al.'s confidence loss with the balanced threshold of each batch). The
torch side runs `transformers`' AutoModel (the backbone, from the same HF folder, cut to the same
layers) with the same pooled token and a zero 2-way head, and saves its checkpoints (model and
optimizer) at the same steps with torch.save. Each side's time is split into exclusive phases:

- startup: imports, config, the task's examples (process start to the first stage);
- compile: the first step of each stage and batch shape, waited for (w2s: XLA compilation, or the
  wait for a step compiled ahead; torch: its first-step costs);
- steps: the rest of the training loops (batches, steps);
- eval: every prediction (test accuracy, agreement over split B, the weak labels of B);
- checkpoints: saving (and w2s: waiting for background saves and removing finished checkpoints);
- other: model building and weight loading, tokenizers, writing results.

Wall seconds and CPU seconds (process_time: all threads) are recorded per phase; the CPU time of a
background thread (w2s's compile-ahead) counts in the phase that is running meanwhile.
"""
from __future__ import annotations

import time

T0_WALL, T0_CPU = time.perf_counter(), time.process_time()  # before the heavy imports

import argparse  # noqa: E402
import contextlib  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import pathlib  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from typing import Iterator  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]
PHASES = ("startup", "compile", "steps", "eval", "checkpoints", "other")


class Phases:
    """Exclusive wall and CPU time per phase: entering a phase pauses the one it interrupts."""

    def __init__(self):
        self.wall = dict.fromkeys(PHASES, 0.0)
        self.cpu = dict.fromkeys(PHASES, 0.0)
        self.stack = ["startup"]
        self.mark = (T0_WALL, T0_CPU)

    def _switch(self) -> None:
        now = (time.perf_counter(), time.process_time())
        self.wall[self.stack[-1]] += now[0] - self.mark[0]
        self.cpu[self.stack[-1]] += now[1] - self.mark[1]
        self.mark = now

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        self._switch()
        self.stack.append(name)
        try:
            yield
        finally:
            self._switch()
            self.stack.pop()

    def start_other(self) -> None:
        """Start-up is over: what no phase claims from here on is 'other'."""
        self._switch()
        self.stack = ["other"]

    def result(self) -> dict:
        self._switch()
        return {"wall": self.wall, "cpu": self.cpu, "total_wall": sum(self.wall.values()),
                "total_cpu": sum(self.cpu.values())}


def experiment_config(setting: str, overrides: list[str]):
    """The config both sides run: the quickstart's (first seed), or the SmolLM2 pair (2 of 30 layers
    weak, all 30 strong) on 1,000 training words, 2 epochs, batch 16."""
    from w2s.config import apply_overrides, load_config_file

    cfg = load_config_file(str(ROOT / "experiments" / "quickstart.py"))
    cfg.seeds = (0,)
    if setting == "smollm2":
        cfg.name = "smollm2_bench"
        cfg.task_options.n_train, cfg.task_options.n_test = 1000, 500
        for side, layers in (("weak", 2), ("strong", None)):
            cfg[side].model, cfg[side].num_layers, cfg[side].pooling = "smollm2-135m-instruct", layers, None
            cfg[side].train.update(batch_size=16, micro_batch_size=16, epochs=2.0, eval_every=0)
        cfg.weak.train.lr, cfg.strong.train.lr = 1e-4, 1e-5
    return apply_overrides(cfg, overrides)


# -- w2s -------------------------------------------------------------------------------------------
def run_w2s(cfg, phases: Phases, folder: pathlib.Path) -> dict:
    from unittest import mock

    import jax
    from flax import nnx

    from w2s import checkpoint, experiment, runtime, stages
    from w2s import train as w2s_train

    runtime.recycle_host_memory()
    cfg.output_dir, cfg.checkpoint_dir = str(folder / "out"), str(folder / "ckpt")
    experiment.validate(cfg)
    experiment.check_inputs(cfg)
    stages.use_compilation_cache(cfg)  # as `w2s run` does; the folder is new, so every compile is cold
    exp = experiment.Experiment(cfg, cfg.seeds[0])
    exp.task  # the examples, read once: start-up, as on the torch side
    phases.start_other()
    seen: set = set()
    step_call, train_fn, predict = w2s_train.StepProgram.__call__, w2s_train.train, stages.Stages._predict
    save, close, finish = checkpoint.StageCheckpointer.save, checkpoint.StageCheckpointer.close, stages.finish_saves

    def timed_step(self, state, batch):
        key = (id(self), w2s_train._signature(batch))
        if key in seen:
            return step_call(self, state, batch)
        seen.add(key)
        with phases("compile"):
            return jax.block_until_ready(step_call(self, state, batch))

    def timed_train(*args, **kwargs):
        seen.clear()  # each stage's first step of each shape
        with phases("steps"):
            model, history = train_fn(*args, **kwargs)
            jax.block_until_ready(nnx.state(model))
        return model, history

    def timed(name, fn):
        def wrapper(*args, **kwargs):
            with phases(name):
                return fn(*args, **kwargs)
        return wrapper

    with mock.patch.object(w2s_train.StepProgram, "__call__", timed_step), \
            mock.patch.object(stages, "train", timed_train), \
            mock.patch.object(stages.Stages, "_predict", timed("eval", predict)), \
            mock.patch.object(checkpoint.StageCheckpointer, "save", timed("checkpoints", save)), \
            mock.patch.object(checkpoint.StageCheckpointer, "close", timed("checkpoints", close)), \
            mock.patch.object(stages, "finish_saves", timed("checkpoints", finish)), \
            mock.patch.object(stages.shutil, "rmtree", timed("checkpoints", stages.shutil.rmtree)):
        results = exp.run()
    return {"accuracy": results["accuracy"], "pgr": results["pgr"]}


# -- torch -----------------------------------------------------------------------------------------
def run_torch(cfg, phases: Phases, folder: pathlib.Path) -> dict:
    import math

    import numpy as np
    import torch
    import transformers

    from w2s.results import metrics
    from w2s.data import TextRows, batch_indices, one_hot
    from w2s.models import resolve_model_dir
    from w2s.models.config import TransformerConfig
    from w2s.models.family import family_of
    from w2s.models.loading import read_hf_config
    from w2s.stages import AGREEMENT_SAMPLE, split_halves
    from w2s.tasks import load_task
    from w2s.train import TrainConfig

    seed = cfg.seeds[0]
    task = load_task(cfg.task, seed=seed, **cfg.task_options)
    split_a, split_b = split_halves(task.train, seed)
    labels = {"a": np.array([y for _, y in split_a]), "b": np.array([y for _, y in split_b]),
              "test": np.array([y for _, y in task.test])}
    texts = {"a": [t for t, _ in split_a], "b": [t for t, _ in split_b], "test": [t for t, _ in task.test]}
    phases.start_other()

    class Classifier(torch.nn.Module):
        """The backbone's hidden states, pooled as w2s pools them, and a zero 2-way head."""

        def __init__(self, side):
            super().__init__()
            path = resolve_model_dir(side.model)
            hf = read_hf_config(path)
            layers = hf["num_hidden_layers"] if side.num_layers is None else side.num_layers
            self.backbone = transformers.AutoModel.from_pretrained(path, num_hidden_layers=layers,
                                                                   torch_dtype=torch.float32)
            self.pooling = side.pooling or family_of(TransformerConfig.from_hf(hf)).pooling
            self.head = torch.nn.Linear(hf["hidden_size"], 2)
            torch.nn.init.zeros_(self.head.weight)
            torch.nn.init.zeros_(self.head.bias)

        def forward(self, ids, mask):
            hidden = self.backbone(input_ids=ids, attention_mask=mask).last_hidden_state
            if self.pooling == "first":
                pooled = hidden[:, 0]
            elif self.pooling == "mean":
                weights = mask.unsqueeze(-1).float()
                pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1.0)
            else:
                last = (mask * torch.arange(mask.shape[1])).argmax(1)
                pooled = hidden[torch.arange(len(ids)), last]
            return self.head(pooled)

    def tensors(rows, idx):
        batch = rows.batch(idx)
        return torch.from_numpy(batch["input_ids"]).long(), torch.from_numpy(batch["attention_mask"]).long()

    def predict(model, rows, batch_size) -> np.ndarray:
        with phases("eval"), torch.no_grad():
            model.eval()
            out = [model(*tensors(rows, np.arange(s, min(s + batch_size, len(rows))))).float().numpy()
                   for s in range(0, len(rows), batch_size)]
            model.train()
            return np.concatenate(out)

    def loss_fn(name, logits, targets, step_frac):
        opts = dict(cfg.loss_options.get(name, {}))
        log_probs = torch.log_softmax(logits.float(), -1)
        soft = -(targets * log_probs).sum(-1).mean()
        if opts.pop("loss", name) == "xent":
            return soft
        alpha = opts.get("alpha_max", 0.75) * min(1.0, step_frac / max(opts.get("warmup_frac", 0.2), 1e-12))
        p1 = torch.softmax(logits.detach().float(), -1)[:, 1]
        threshold = torch.quantile(p1, 1.0 - targets[:, 1].mean())
        hard = torch.nn.functional.one_hot((p1 > threshold).long(), 2).float()
        return (1 - alpha) * soft + alpha * -(hard * log_probs).sum(-1).mean()

    def fit(side, stage: str, split: str, targets: np.ndarray, loss_name: str, truth=None):
        tc = TrainConfig.from_config(side.train)
        torch.manual_seed(seed)
        model = Classifier(side)
        tokenizer = transformers.AutoTokenizer.from_pretrained(resolve_model_dir(side.model))
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        rows = {s: TextRows.of(tokenizer, texts[s], tc.max_length) for s in texts}
        total = tc.total_steps(len(rows[split]))
        warmup = tc.warmup_steps(total)
        optimizer = torch.optim.AdamW(model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)

        def rate(step):  # the same numbers as w2s.train.learning_rate
            if step < warmup:
                return step / warmup
            decay = max(total, warmup + 1) - warmup
            return 0.5 * (1 + math.cos(math.pi * min(step - warmup, decay) / decay))

        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, rate)
        ckpt = folder / "ckpt" / stage
        sample = np.arange(len(targets))
        if len(sample) > AGREEMENT_SAMPLE:
            sample = np.sort(np.random.default_rng([seed, 5]).choice(sample, AGREEMENT_SAMPLE, replace=False))
        with phases("steps"):
            for step in range(total):
                with phases("compile") if step == 0 else contextlib.nullcontext():
                    idx = batch_indices(len(rows[split]), tc.batch_size, seed, step)
                    logits = model(*tensors(rows[split], idx))
                    loss = loss_fn(loss_name, logits, torch.from_numpy(targets[idx]).float(), step / total)
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip)
                    optimizer.step()
                    schedule.step()
                    float(loss)
                if tc.eval_every and (step + 1) % tc.eval_every == 0 and step + 1 < total:
                    evaluate(model, rows, split, tc, targets, truth, sample)
                if tc.checkpoint_every and (step + 1) % tc.checkpoint_every == 0:  # w2s: keep_checkpoints=False
                    with phases("checkpoints"):
                        ckpt.mkdir(parents=True, exist_ok=True)
                        torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict()}, ckpt / "last.pt")
        return model, rows, evaluate(model, rows, split, tc, targets, truth, np.arange(len(targets)))

    def evaluate(model, rows, split, tc, targets, truth, sample) -> float:
        """What w2s's evaluation computes: test accuracy and, for a student, the agreement over its
        training rows (a sample of them before the last evaluation: w2s.stages.AGREEMENT_SAMPLE)."""
        test = metrics.accuracy(predict(model, rows["test"], tc.eval_batch_size), labels["test"])
        if truth is not None:
            metrics.agreement(predict(model, rows[split].take(sample), tc.eval_batch_size), targets[sample], truth[sample])
        return test

    weak, rows, weak_acc = fit(cfg.weak, "weak", "a", one_hot(labels["a"]), "xent")
    weak_labels = metrics.softmax(predict(weak, rows["b"], cfg.weak.train.eval_batch_size))
    del weak
    accuracy = {"weak": weak_acc, "ceiling": fit(cfg.strong, "ceiling", "b", one_hot(labels["b"]), "xent")[2],
                "student": {n: fit(cfg.strong, f"student_{n}", "b", weak_labels, n, labels["b"])[2] for n in cfg.losses}}
    pgr = {n: metrics.pgr(accuracy["weak"], a, accuracy["ceiling"]) for n, a in accuracy["student"].items()}
    return {"accuracy": accuracy, "pgr": pgr}


def worker(side: str, setting: str, overrides: list[str], out: str) -> None:
    phases = Phases()
    cfg = experiment_config(setting, overrides)
    with tempfile.TemporaryDirectory(prefix=f"e2e_{side}_") as folder:
        scores = (run_w2s if side == "w2s" else run_torch)(cfg, phases, pathlib.Path(folder))
    pathlib.Path(out).write_text(json.dumps({"side": side, **phases.result(), **scores}))


def table(runs: list[dict]) -> str:
    lines = [f"{'round':>5} {'side':>5} " + " ".join(f"{p:>12}" for p in PHASES) + f" {'total wall':>11} {'total CPU':>10}"]
    for r in runs:
        lines.append(f"{r['round']:>5} {r['side']:>5} " + " ".join(f"{r['wall'][p]:>12.1f}" for p in PHASES)
                     + f" {r['total_wall']:>11.1f} {r['total_cpu']:>10.1f}")
    for kind in ("total_wall", "total_cpu"):
        w2s = sorted(r[kind] for r in runs if r["side"] == "w2s")
        ref = sorted(r[kind] for r in runs if r["side"] == "torch")
        if w2s and ref:
            lines.append(f"torch / w2s ({kind.replace('total_', '')}, medians): {np.median(ref) / np.median(w2s):.2f}x")
    return "\n".join(lines)


if __name__ == "__main__":
    import numpy as np

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--setting", choices=("smollm2", "quickstart"), default="smollm2")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--sides", default="w2s,torch", help="the order within a round")
    parser.add_argument("--json")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args, overrides = parser.parse_known_args()
    if args.worker:
        worker(args.worker, args.setting, overrides, args.out)
        sys.exit(0)
    runs = []
    for round_ in range(args.rounds):
        for side in args.sides.split(","):
            with tempfile.NamedTemporaryFile(suffix=".json") as out:
                subprocess.run([sys.executable, __file__, "--worker", side, "--setting", args.setting, "--out", out.name,
                                *overrides], check=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
                runs.append({"round": round_, **json.loads(pathlib.Path(out.name).read_text())})
            print(json.dumps({k: runs[-1][k] for k in ("round", "side", "total_wall", "total_cpu", "accuracy")}), flush=True)
    print(table(runs))
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps({"setting": args.setting, "overrides": overrides, "runs": runs}, indent=1))
