"""What a run shows while it runs: its overall progress over seeds × stages, with an ETA from the
stages it has finished, and (optionally) each stage's history logged live to TensorBoard.

The bar sits above each stage's own step bar (w2s.train). Quiet mode draws no bars at all and prints
one line per finished stage instead, for logs that a terminal will never redraw. TensorBoard files
are written with tensorboardX (the `tensorboard` extra), which needs no TensorFlow.
"""
from __future__ import annotations

import dataclasses
import pathlib
import sys
import time
from typing import Any

from tqdm.auto import tqdm

from w2s import distributed
from w2s.config import ConfigError


@dataclasses.dataclass(frozen=True)
class PlannedStage:
    """One stage of the run: `label` names it on screen, `model` groups stages of similar cost."""

    label: str
    model: str


def format_seconds(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h{rest // 60:02d}m" if hours else f"{rest // 60}m{rest % 60:02d}s"


class RunProgress:
    """Counts finished stages of a plan. The ETA adds, for each stage left, the mean time of the
    finished stages of its model (of all finished stages where its model has none yet): a strong
    model's stage is not estimated from the weak model's. Stages read back from disk cost nothing
    and are left out of the means."""

    def __init__(self, plan: list[PlannedStage], quiet: bool = False):
        self.plan, self.quiet = list(plan), quiet
        self.done = 0
        self._seconds: dict[str, list[float]] = {}
        self._bar = tqdm(total=len(self.plan), desc="run", unit="stage", dynamic_ncols=True, position=0,
                         bar_format="{l_bar}{bar}| {n}/{total} stages [{elapsed}{postfix}]",
                         disable=quiet or not distributed.is_main())
        self._start = time.perf_counter()

    def eta(self) -> float | None:
        """Seconds the stages left should take; None before any stage has trained."""
        every = [s for times in self._seconds.values() for s in times]
        if not every:
            return None
        overall = sum(every) / len(every)
        return sum(sum(self._seconds[s.model]) / len(self._seconds[s.model]) if s.model in self._seconds
                   else overall for s in self.plan[self.done:])

    def finished(self, seconds: float | None) -> None:
        """The next stage of the plan is done; seconds=None: it was read back, not trained."""
        stage = self.plan[self.done]
        if seconds is not None:
            self._seconds.setdefault(stage.model, []).append(seconds)
        self.done += 1
        eta = self.eta()
        left = "" if eta is None else f"ETA {format_seconds(eta)}"
        if self.quiet:
            if distributed.is_main():
                took = "read back" if seconds is None else format_seconds(seconds)
                print(f"[{self.done}/{len(self.plan)} stages, {format_seconds(time.perf_counter() - self._start)}] "
                      f"{stage.label}: {took}" + (f"; {left}" if left and self.done < len(self.plan) else ""),
                      file=sys.stdout, flush=True)
            return
        self._bar.set_postfix_str(left, refresh=False)
        self._bar.update(1)

    def close(self) -> None:
        self._bar.close()

    def __enter__(self) -> "RunProgress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class TensorBoardLog:
    """Writes each history row of one stage as scalars (tag = the row's key) at its step, as training
    logs them; `tensorboard --logdir <output_dir>` shows every seed and stage side by side."""

    def __init__(self, logdir: str | pathlib.Path):
        self._writer = self.writer_class()(str(logdir))

    @staticmethod
    def writer_class() -> type:
        """tensorboardX's SummaryWriter; a run asks first, to fail before it trains anything."""
        try:
            from tensorboardX import SummaryWriter
        except ImportError:
            raise ConfigError("--tensorboard needs tensorboardX: pip install 'w2s[tensorboard]' "
                             "(or pip install tensorboardX).") from None
        return SummaryWriter

    def __call__(self, row: dict[str, Any]) -> None:
        for key, value in row.items():
            if key != "step":
                self._writer.add_scalar(key, value, row["step"])
        self._writer.flush()  # live: a stage's rows appear while it trains

    def close(self) -> None:
        self._writer.close()
