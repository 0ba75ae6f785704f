"""Training checkpoints: one folder per save, trusted only once its ``COMPLETE`` marker exists.

A save writes ``states`` ({entry name: state}) into ``<dir>/tmp-<step>-<uuid>/``. The big, sharded
entries (model, optimizer and EMA of every engine) go through torch.distributed.checkpoint into
``state/``: every rank writes its own shards, nothing is gathered, and any world size or parallel
layout reads them back (DCP reshards on load). The small entries (lr schedule, sampler, step, every
rank's RNG state, the model config) are rank 0's, written as JSON where they round-trip and with
``torch.save`` otherwise. Every file is fsynced; the marker (which lists the entries) comes last,
then the folder is renamed to ``epoch{e}-global_step{s}``. A run killed mid-save leaves a ``tmp-*``
folder that is never listed or loaded (and is deleted by the next save), so the previous
checkpoint stays the latest.

An asynchronous save returns once the shards are staged (copied to CPU memory): the write, the
marker and the rename happen in the background while training goes on, and the next save (or
:meth:`CheckpointManager.wait`) waits for it. The background write uses a process group of its
own, so its collectives never interleave with training's.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import threading
import time
import uuid
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp

from opensora.errors import CheckpointError
from opensora.models.checkpoint_io import (
    TRAINING_MARKER,
    TRAINING_STATE,
    error_reason,
    read_dcp_entries,
    save_state_dict_atomic,
)

COMPLETE = TRAINING_MARKER
SHARDED = TRAINING_STATE  # the DCP folder inside a checkpoint
_NAME = re.compile(r"^epoch(\d+)-global_step(\d+)$")


def checkpoint_name(epoch: int, step: int) -> str:
    return f"epoch{epoch}-global_step{step}"


def is_complete(path: str | os.PathLike) -> bool:
    return (Path(path) / COMPLETE).is_file()


class CheckpointManager:
    """Saves, lists, loads and prunes the checkpoints in ``directory``.

    ``keep_last``: how many complete checkpoints to keep (None keeps all). ``is_main``: whether this
    rank writes the small entries, the marker and the rename; with a process group every rank must
    call :meth:`save` and :meth:`wait`. ``async_save``: return from a save once the shards are staged.
    """

    def __init__(
        self, directory: str | os.PathLike, keep_last: int | None = None, is_main: bool = True,
        async_save: bool = False,
    ) -> None:  # fmt: skip
        if keep_last is not None and keep_last < 1:
            raise ValueError(f"keep_last must be >= 1 or None, got {keep_last}")
        self.directory = Path(directory)
        self.keep_last = keep_last
        self.is_main = is_main
        self.async_save = async_save
        # the background writes' own collectives; gloo, as DCP's metadata exchange is CPU objects
        self._group = dist.new_group(backend="gloo") if _distributed() else None
        self._pending: threading.Thread | None = None
        self._error: BaseException | None = None

    # ---- listing ------------------------------------------------------------------------------
    def checkpoints(self) -> list[Path]:
        """Complete checkpoints, oldest first (by step)."""
        if not self.directory.is_dir():
            return []
        found = []
        for path in self.directory.iterdir():
            match = _NAME.match(path.name)
            if match and path.is_dir() and is_complete(path):
                found.append((int(match[2]), int(match[1]), path))
        return [path for *_, path in sorted(found)]

    def latest(self) -> Path | None:
        found = self.checkpoints()
        return found[-1] if found else None

    # ---- saving -------------------------------------------------------------------------------
    def save(self, step: int, states: Mapping[str, Any], epoch: int = 0, sharded: Collection[str] = ()) -> Path:
        """Write ``states`` as checkpoint ``epoch{epoch}-global_step{step}``; returns its path on every rank.

        ``sharded``: the entries every rank passes its own shards of (model, optimizer, EMA: plain
        tensors or DTensors); the others are rank 0's. Asynchronous saves return before the folder
        is in place; :meth:`wait` waits for it.
        """
        self.wait()
        target = self.directory / checkpoint_name(epoch, step)
        staging = None
        if self.is_main:
            self.directory.mkdir(parents=True, exist_ok=True)
            staging = self.directory / f"tmp-{step}-{uuid.uuid4().hex[:8]}"
            staging.mkdir()
        staging = Path(broadcast_object(staging))
        small = {name: state for name, state in states.items() if name not in sharded}
        files = {name: _write_entry(staging, name, state) for name, state in small.items()} if self.is_main else {}
        big = {name: states[name] for name in sharded}
        marker = {"step": step, "epoch": epoch, "files": files, "sharded": sorted(big)}
        writer = dict(checkpoint_id=staging / SHARDED, process_group=self._group, no_dist=self._group is None)
        if not self.async_save:
            if big:
                dcp.save(big, **writer)
            self._finish(staging, target, marker)
            _barrier()
            return target
        future = dcp.async_save(big, **writer) if big else None  # returns once the shards are staged
        self._pending = threading.Thread(target=self._finish_after, args=(future, staging, target, marker),
                                         name="checkpoint-writer", daemon=True)  # fmt: skip
        self._pending.start()
        return target

    def wait(self) -> None:
        """Block until the last asynchronous save is complete (its folder in place); raise its error."""
        if self._pending is not None:
            self._pending.join()
            self._pending = None
            _barrier()  # every rank sees the renamed folder from here on
        if self._error is not None:
            error, self._error = self._error, None
            raise CheckpointError(f"writing a checkpoint failed: {error_reason(error)}") from error

    def _finish_after(self, future: Any, staging: Path, target: Path, marker: dict) -> None:
        try:
            if future is not None:
                future.result()  # this rank's shards written; on rank 0 also everyone's metadata
            self._finish(staging, target, marker)
        except BaseException as exc:  # raised in the training thread by the next wait()
            self._error = exc

    def _finish(self, staging: Path, target: Path, marker: dict) -> None:
        if not self.is_main:
            return
        marker = {**marker, "time": time.strftime("%Y-%m-%d %H:%M:%S")}
        if (staging / SHARDED).is_dir():
            _fsync_tree(staging / SHARDED)
        _write_synced(staging / COMPLETE, json.dumps(marker, indent=1).encode())
        _fsync_dir(staging)
        _replace_dir(staging, target)
        _fsync_dir(self.directory)
        self.prune()

    def prune(self) -> None:
        """Delete all but the last ``keep_last`` complete checkpoints, and unfinished ``tmp-*`` folders."""
        for stale in self.directory.glob("tmp-*"):
            shutil.rmtree(stale, ignore_errors=True)
        if self.keep_last is not None:
            for old in self.checkpoints()[: -self.keep_last]:
                shutil.rmtree(old, ignore_errors=True)

    # ---- loading ------------------------------------------------------------------------------
    @staticmethod
    def find(path: str | os.PathLike) -> Path:
        """``path`` if it is a complete checkpoint, else the latest complete checkpoint inside it."""
        path = Path(path)
        if is_complete(path):
            return path
        latest = CheckpointManager(path).latest() if path.is_dir() else None
        if latest is None:
            what = "does not exist" if not path.exists() else "is not a complete checkpoint and holds none"
            raise CheckpointError(f"no checkpoint at '{path}': it {what} (no {COMPLETE} marker)")
        return latest

    @staticmethod
    def entries(path: str | os.PathLike) -> tuple[dict[str, str], list[str]]:
        """(small entries {name: file}, sharded entry names) of a complete checkpoint."""
        path = Path(path)
        if not is_complete(path):
            raise CheckpointError(f"cannot load '{path}': no {COMPLETE} marker (an unfinished or foreign folder)")
        marker = json.loads((path / COMPLETE).read_text())
        return marker["files"], marker.get("sharded", [])

    @staticmethod
    def load(path: str | os.PathLike, names: list[str] | None = None) -> dict[str, Any]:
        """{entry name: state} of a complete checkpoint (only ``names`` if given), in one process.

        Sharded entries come back whole (full tensors on the CPU): for tools and tests, not for
        resuming an 11B model (see :func:`load_sharded_entries`).
        """
        path = Path(path)
        files, sharded = CheckpointManager.entries(path)
        missing = [name for name in names or [] if name not in files and name not in sharded]
        if missing:
            held = ", ".join([*files, *sharded])
            raise CheckpointError(f"checkpoint '{path}' has no {', '.join(missing)} (it holds {held})")
        wanted = [name for name in sharded if names is None or name in names]
        states = read_dcp_entries(path / SHARDED, wanted) if wanted else {}
        for name, file in files.items():
            if names is None or name in names:
                states[name] = _read_entry(path / file)
        return states

    @staticmethod
    def info(path: str | os.PathLike) -> dict[str, Any]:
        """The marker of a complete checkpoint: step, epoch, files, sharded entries, time."""
        return json.loads((Path(path) / COMPLETE).read_text())


def load_sharded_entries(path: str | os.PathLike, states: dict[str, Any]) -> None:
    """Read the sharded entries of checkpoint ``path`` into ``states`` in place (every rank calls it).

    ``states`` holds each wanted entry's destination: this rank's shards (DTensors) or whole
    tensors; DCP reads whatever parts of the stored shards overlap them, so the world size and
    layout that wrote the checkpoint do not matter.
    """
    path = Path(path)
    _, sharded = CheckpointManager.entries(path)
    missing = [name for name in states if name not in sharded]
    if missing:
        raise CheckpointError(f"checkpoint '{path}' has no {', '.join(missing)} (sharded: {', '.join(sharded)})")
    try:
        dcp.load(states, checkpoint_id=path / SHARDED, no_dist=not _distributed())
    except Exception as exc:  # a corrupt or foreign shard: one line naming the checkpoint
        raise CheckpointError(f"cannot read the sharded state of '{path}': {error_reason(exc)}") from exc


# ---- entries ------------------------------------------------------------------------------------
def _write_entry(folder: Path, name: str, state: Any) -> str:
    if isinstance(state, Mapping) and state and all(isinstance(v, torch.Tensor) for v in state.values()):
        save_state_dict_atomic(state, folder / f"{name}.safetensors")  # fsyncs
        return f"{name}.safetensors"
    if _round_trips_as_json(state):
        _write_synced(folder / f"{name}.json", json.dumps(state, indent=1).encode())
        return f"{name}.json"
    path = folder / f"{name}.pt"
    torch.save(state, path)
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())
    return path.name


def _read_entry(path: Path) -> Any:
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(path, device="cpu")
        if path.suffix == ".json":
            return json.loads(path.read_text())
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # any unreadable entry makes the checkpoint unusable; say which file
        raise CheckpointError(f"cannot read checkpoint file '{path}': {error_reason(exc)}") from exc


def _round_trips_as_json(state: Any) -> bool:
    try:
        return json.loads(json.dumps(state)) == state  # tuples or int keys would come back changed
    except (TypeError, ValueError):
        return False


def _write_synced(path: Path, data: bytes) -> None:
    with open(path, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def _fsync_tree(folder: Path) -> None:
    # DCP writes its files without fsync; they must be durable before the marker says they are there
    for path in folder.iterdir():
        if path.is_file():
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())
    _fsync_dir(folder)


def _fsync_dir(path: Path) -> None:
    # makes the entries (and renames) of a folder durable; not every platform allows opening a folder
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _replace_dir(staging: Path, target: Path) -> None:
    if target.exists():  # saving the same step again (e.g. a resumed run): the new one wins
        old = target.with_name(f"tmp-replaced-{uuid.uuid4().hex[:8]}")
        os.rename(target, old)
        os.rename(staging, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(staging, target)


def _barrier() -> None:
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


# ---- random number generators ----------------------------------------------------------------------
def rng_state() -> dict[str, Any]:
    """The states of Python's, numpy's and torch's (CPU and CUDA) global generators."""
    _, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": pos, "has_gauss": has_gauss,
                  "cached_gaussian": cached},
        "torch": torch.get_rng_state(),
    }  # fmt: skip
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore what :func:`rng_state` captured."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    numpy = state["numpy"]
    keys = numpy["keys"].numpy().astype(np.uint32)
    np.random.set_state(("MT19937", keys, int(numpy["pos"]), int(numpy["has_gauss"]), float(numpy["cached_gaussian"])))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


# ---- checkpoint I/O on rank 0 for every rank ----------------------------------------------------------
def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def broadcast_object(obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank."""
    if not _distributed():
        return obj
    holder = [obj]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]


def gather_objects(obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order, on every rank."""
    if not _distributed():
        return [obj]
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


def read_on_main(path: str | os.PathLike, names: list[str]) -> tuple[Path, dict[str, Any]]:
    """Rank 0 finds and reads the small entries ``names`` of a checkpoint that it holds (other ranks get ``{}``).

    A failure there is raised on every rank, so none waits forever in a later collective.
    """
    checkpoint, states, error = None, {}, None
    if not _distributed() or dist.get_rank() == 0:
        try:
            checkpoint = CheckpointManager.find(path)
            files, _ = CheckpointManager.entries(checkpoint)
            states = CheckpointManager.load(checkpoint, [name for name in names if name in files])
        except CheckpointError as exc:
            error = str(exc)
    checkpoint, error = broadcast_object((checkpoint, error))
    if error is not None:
        raise CheckpointError(error)
    return checkpoint, states
