"""What a training run reports: a progress bar, log lines, TensorBoard scalars, wandb, phase timings.

Only the main rank reports; the others log warnings only. TensorBoard is used when the
``tensorboard`` package is installed, wandb when asked for (offline when ``WANDB_MODE=offline``
or wandb's server cannot be reached, so a run never waits on the network).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from opensora.errors import ConfigError

PACKAGE_LOGGER = "opensora"
WANDB_HOST = ("api.wandb.ai", 443)


class PhaseTimer:
    """Wall time per phase (data, encode, forward_backward, optimizer), averaged per step on demand.

    CUDA runs asynchronously, so without ``sync`` a phase is charged for the time to *launch* its
    kernels; ``sync=True`` (config ``record_time``) waits for them, at some cost in speed.
    """

    def __init__(self, sync: bool = False) -> None:
        self.sync = sync and torch.cuda.is_available()
        self.totals: dict[str, float] = {}
        self.steps = 0

    @contextlib.contextmanager
    def __call__(self, phase: str) -> Iterator[None]:
        if self.sync:
            torch.cuda.synchronize()
        start = time.perf_counter()
        try:
            yield
        finally:
            if self.sync:
                torch.cuda.synchronize()
            self.totals[phase] = self.totals.get(phase, 0.0) + time.perf_counter() - start

    def step_done(self) -> None:
        self.steps += 1

    def averages(self) -> dict[str, float]:
        """Seconds per step of each phase since the last call, which starts a new window."""
        result = {f"time/{phase}": total / max(self.steps, 1) for phase, total in self.totals.items()}
        self.totals, self.steps = {}, 0
        return result


class _TqdmHandler(logging.Handler):
    # log lines printed through tqdm so they do not break the progress bar
    def emit(self, record: logging.LogRecord) -> None:
        tqdm.write(self.format(record))


class TrainLogger:
    """Progress bar, log lines (also written to ``<outputs>/train.log``), TensorBoard and wandb."""

    def __init__(
        self,
        outputs: str | os.PathLike,
        is_main: bool,
        config: Mapping[str, Any] | None = None,
        use_wandb: bool = False,
        wandb_project: str = "opensora",
        run_name: str | None = None,
    ) -> None:
        self.outputs, self.is_main = Path(outputs), is_main
        self.log = logging.getLogger(PACKAGE_LOGGER)
        self._level = self.log.level  # restored by close(), so a later run in this process starts as this one did
        self._handlers = self._attach_handlers() if is_main else []
        self.bar = self.tensorboard = self.wandb = None
        self._window = (time.perf_counter(), 0)  # (time, step) of the last log line
        self._bar_start, self._bar_samples = time.perf_counter(), 0
        if not is_main:
            return
        try:
            self.tensorboard = _tensorboard(self.outputs / "tensorboard")
            if use_wandb:
                self.wandb = _start_wandb(wandb_project, run_name or self.outputs.name, config, self.outputs)
        except BaseException:
            self.close()
            raise

    def start(self, total_steps: int | None, initial_step: int = 0) -> None:
        """Start the progress bar (shown on a terminal only; log lines carry the same numbers)."""
        self._window = (time.perf_counter(), initial_step)
        self._bar_start, self._bar_samples = time.perf_counter(), 0
        if self.is_main:
            self.bar = tqdm(total=total_steps, initial=initial_step, unit="step", dynamic_ncols=True, disable=None)

    def _attach_handlers(self) -> list[logging.Handler]:
        self.outputs.mkdir(parents=True, exist_ok=True)
        console, file = _TqdmHandler(), logging.FileHandler(self.outputs / "train.log")
        formatter = logging.Formatter("[%(asctime)s] %(message)s", "%Y-%m-%d %H:%M:%S")
        for handler in (console, file):
            handler.setFormatter(formatter)
            self.log.addHandler(handler)
        if self.log.level == logging.NOTSET or self.log.level > logging.INFO:
            self.log.setLevel(logging.INFO)
        return [console, file]

    def info(self, message: str) -> None:
        if self.is_main:
            self.log.info(message)

    def step(self, loss: float, lr: float, samples: int = 0) -> None:
        """One optimizer step done (``samples``: of all ranks): advance the bar, show loss, lr and samples/s."""
        if self.bar is None:
            return
        self._bar_samples += samples
        elapsed = max(time.perf_counter() - self._bar_start, 1e-9)
        self.bar.update(1)
        self.bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}", samples_per_s=f"{self._bar_samples / elapsed:.1f}",
                             refresh=False)  # fmt: skip

    def log_scalars(self, step: int, scalars: Mapping[str, float], samples: int) -> dict[str, float]:
        """Report ``scalars`` at ``step``, with steps/s and samples/s since the last call (``samples``: all ranks)."""
        now = time.perf_counter()
        start, start_step = self._window
        elapsed = max(now - start, 1e-9)
        rates = {"steps_per_sec": (step - start_step) / elapsed, "samples_per_sec": samples / elapsed}
        self._window = (now, step)
        scalars = {**scalars, **rates}
        if not self.is_main:
            return scalars
        if self.tensorboard is not None:
            for key, value in scalars.items():
                self.tensorboard.add_scalar(key, value, step)
        if self.wandb is not None:
            self.wandb.log(dict(scalars), step=step)
        text = " ".join(f"{key}={_short(value)}" for key, value in scalars.items())
        self.log.info(f"step {step}: {text}")
        return scalars

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.tensorboard is not None:
            self.tensorboard.close()
        if self.wandb is not None:
            self.wandb.finish()
        for handler in self._handlers:
            self.log.removeHandler(handler)
            handler.close()
        if self._handlers:
            self.log.setLevel(self._level)
        self._handlers = []


def _short(value: float) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _tensorboard(log_dir: Path) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # optional: pip install -r requirements/requirements-train.txt
        return None
    return SummaryWriter(log_dir=str(log_dir))


def wandb_mode() -> str:
    """``WANDB_MODE`` when set to offline/disabled; else online if wandb's server answers, offline if not."""
    mode = os.environ.get("WANDB_MODE", "").lower()
    if mode in ("offline", "dryrun"):
        return "offline"
    if mode == "disabled":
        return "disabled"
    try:
        socket.create_connection(WANDB_HOST, timeout=3).close()
    except OSError:
        return "offline"
    return "online"


def _start_wandb(project: str, name: str, config: Mapping[str, Any] | None, directory: Path) -> Any:
    try:
        import wandb
    except ImportError:
        raise ConfigError(
            "wandb=True needs the wandb package (pip install -r requirements/requirements-train.txt)"
        ) from None
    mode = wandb_mode()
    if mode == "offline":
        logging.getLogger(PACKAGE_LOGGER).info("wandb runs offline; upload later with `wandb sync`")
    return wandb.init(project=project, name=name, config=dict(config or {}), dir=str(directory), mode=mode)
