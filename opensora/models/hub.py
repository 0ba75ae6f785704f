"""Finding a checkpoint: a weights file, a local directory, or a Hugging Face hub repository.

:func:`resolve_checkpoint` turns what the user passed into local paths of ``config.json`` and the
weight files (one file, or every shard an ``*.index.json`` names). Hub files come through the
Hugging Face cache; ``HF_HUB_OFFLINE``, ``HF_HUB_CACHE`` and ``HF_HOME`` are read at call time.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from huggingface_hub import constants as hf_constants
from huggingface_hub import hf_hub_download
from huggingface_hub.errors import (
    HfHubHTTPError,
    LocalEntryNotFoundError,
    RemoteEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from opensora.errors import CheckpointError
from opensora.models.checkpoint_io import (
    CONFIG_NAME,
    INDEX_SUFFIX,
    TRAINING_MARKER,
    TRAINING_STATE,
    WEIGHT_NAMES,
    error_reason,
    is_dcp_folder,
)

_REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*")
_FILE_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin", ".json")


def is_repo_id(name: str) -> bool:
    """Whether ``name`` is shaped like a hub id (``owner/name``); whether it exists is not checked."""
    return _REPO_ID.fullmatch(name) is not None


def hub_offline() -> bool:
    """Whether ``HF_HUB_OFFLINE`` (or ``TRANSFORMERS_OFFLINE``) is set now.

    huggingface_hub reads the variable once, at import; this reads it on every call.
    """
    value = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE")
    if value is None:
        return bool(hf_constants.HF_HUB_OFFLINE)
    return value.strip().upper() in {"1", "ON", "YES", "TRUE"}


def hub_cache_dir() -> str | None:
    """The hub cache named by ``HF_HUB_CACHE`` or ``HF_HOME`` now; None leaves huggingface_hub's default."""
    if os.environ.get("HF_HUB_CACHE"):
        return os.path.expanduser(os.environ["HF_HUB_CACHE"])
    if os.environ.get("HF_HOME"):
        return os.path.join(os.path.expanduser(os.environ["HF_HOME"]), "hub")
    return None


@dataclass
class CheckpointFiles:
    """Local paths of a checkpoint; ``source`` names it in messages (quoted path or hub id).

    For a sharded checkpoint ``index`` is the ``*.index.json`` file and ``weight_map`` its tensor
    key -> local shard path.
    """

    config: Path | None
    weights: list[Path]
    source: str
    index: Path | None = None
    weight_map: dict[str, Path] | None = None


def resolve_checkpoint(path_or_id: str | os.PathLike, subfolder: str | None, revision: str | None) -> CheckpointFiles:
    """The files of a weights file, a directory or a hub id, downloaded if need be; CheckpointError otherwise.

    A directory or repository holds ``config.json`` (optional) and the first of ``WEIGHT_NAMES``
    found; a single file has no config.
    """
    path = Path(path_or_id).expanduser()
    if path.is_file():
        if subfolder:
            raise CheckpointError(f"cannot load '{path}': subfolder '{subfolder}' given for a single file")
        return CheckpointFiles(None, [path], f"'{path}'")
    if path.is_dir() and (path / TRAINING_MARKER).is_file() and is_dcp_folder(path / TRAINING_STATE):
        # a sharded training checkpoint: its raw weights, read whole (tools/export_ema.py for the EMA)
        return CheckpointFiles(None, [path / TRAINING_STATE], f"'{path}'")
    if path.is_dir():
        root = path / subfolder if subfolder else path
        files = _collect(lambda name: (root / name) if (root / name).is_file() else None, f"'{root}'")
        if files is None:
            raise CheckpointError(f"cannot load '{root}': the directory holds none of {', '.join(WEIGHT_NAMES)}")
        return files
    repo_id = str(path_or_id)
    if not is_repo_id(repo_id) or repo_id.endswith(_FILE_SUFFIXES):
        raise CheckpointError(f"cannot load '{repo_id}': no such file or directory")
    return _resolve_hub(repo_id, subfolder, revision)


def _collect(fetch: Callable[[str], Path | None], source: str) -> CheckpointFiles | None:
    """Files found by ``fetch`` (a name -> local path or None), or None if it finds no weights."""
    config = fetch(CONFIG_NAME)
    for name in WEIGHT_NAMES:
        found = fetch(name)
        if found is None:
            continue
        if not name.endswith(INDEX_SUFFIX):
            return CheckpointFiles(config, [found], source)
        weight_map = _weight_map(found)
        shards = {shard: _fetch_shard(fetch, shard, found) for shard in dict.fromkeys(weight_map.values())}
        local_map = {key: shards[shard] for key, shard in weight_map.items()}
        return CheckpointFiles(config, list(shards.values()), source, index=found, weight_map=local_map)
    return None


def _weight_map(index: Path) -> dict[str, str]:
    """The ``weight_map`` of an index file: tensor key -> shard file name."""
    try:
        weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        if not all(isinstance(key, str) and isinstance(shard, str) for key, shard in weight_map.items()):
            raise ValueError("weight_map must map tensor names to shard file names")
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise CheckpointError(f"cannot read checkpoint index '{index}': {error_reason(exc)}") from exc
    return weight_map


def _fetch_shard(fetch: Callable[[str], Path | None], shard: str, index: Path) -> Path:
    found = fetch(shard)
    if found is None:
        raise CheckpointError(f"checkpoint index '{index}' names shard '{shard}', which cannot be found")
    return found


class _HubFetcher:
    """Fetches single files of one hub repository through the Hugging Face cache."""

    def __init__(self, repo_id: str, subfolder: str | None, revision: str | None) -> None:
        self.repo_id, self.subfolder, self.revision = repo_id, subfolder, revision
        self.offline = hub_offline()
        self.unreachable = False
        self.cache_dir = hub_cache_dir()

    def __call__(self, name: str) -> Path | None:
        try:
            local = hf_hub_download(
                self.repo_id,
                name,
                subfolder=self.subfolder,
                revision=self.revision,
                cache_dir=self.cache_dir,
                local_files_only=self.offline or self.unreachable,
            )
        except RemoteEntryNotFoundError:
            return None
        except LocalEntryNotFoundError:
            # Offline, "not cached" may just mean "not in the repo"; online, the hub did not answer,
            # so the remaining files can only come from the cache too.
            self.unreachable = not self.offline
            return None
        except RevisionNotFoundError as exc:
            raise CheckpointError(f"cannot load '{self.repo_id}': no revision '{self.revision}' on the hub") from exc
        except RepositoryNotFoundError as exc:
            raise CheckpointError(
                f"cannot load '{self.repo_id}': not a local path, and the hub has no such repository "
                "(or it is gated or private and you are not logged in)"
            ) from exc
        except (HfHubHTTPError, OSError, ValueError) as exc:
            raise CheckpointError(f"cannot load '{self.repo_id}': {error_reason(exc)}") from exc
        return Path(local)


def _resolve_hub(repo_id: str, subfolder: str | None, revision: str | None) -> CheckpointFiles:
    fetch = _HubFetcher(repo_id, subfolder, revision)
    source = f"'{repo_id}'" + (f" (subfolder '{subfolder}')" if subfolder else "")
    files = _collect(fetch, source)
    if files is not None:
        return files
    if fetch.offline or fetch.unreachable:
        why = "HF_HUB_OFFLINE=1" if fetch.offline else "connection failed"
        cache = fetch.cache_dir or "~/.cache/huggingface/hub"
        raise CheckpointError(
            f"cannot load '{repo_id}': not a local path, not in the Hugging Face cache ({cache}), and the hub is "
            f"unreachable ({why}); on a connected machine run 'hf download {repo_id}' and copy the cache here, "
            f"or 'hf download {repo_id} --local-dir DIR' and pass DIR"
        )
    raise CheckpointError(f"cannot load '{repo_id}': the hub repository holds none of {', '.join(WEIGHT_NAMES)}")
