"""Finding the metric networks' weight files on local disk; nothing is ever downloaded.

One folder holds them, named by ``--lpips_weights DIR`` or, failing that, the environment variable
``OPENSORA_EVAL_WEIGHTS``. File names are those torchvision and the ``lpips`` package publish:

- ``alexnet-owt-7be5be79.pth``: torchvision AlexNet, the LPIPS ``alex`` trunk (keys ``features.*``);
- ``vgg16-397923af.pth``: torchvision VGG16, the LPIPS ``vgg`` trunk (keys ``features.*``);
- ``alex.pth`` / ``vgg.pth``: LPIPS v0.1 linear heads (keys ``lin0.model.1.weight`` ...);
- ``raft_small_C_T_V2-01064c6d.pth`` / ``raft_large_C_T_SKHT_V2-ff5fadd5.pth``: torchvision RAFT
  small / large, the FloLPIPS flow network.

The linear heads are small and ship inside the ``lpips`` wheel (``lpips/weights/v0.1/``); when the
folder lacks them and that package is installed, its files are read as data (the package is
located, never imported).
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Mapping
from pathlib import Path

import torch

from opensora.errors import OpenSoraError

ENV_VAR = "OPENSORA_EVAL_WEIGHTS"


class MetricUnavailableError(OpenSoraError):
    """A metric cannot run here (a weight file or an optional package is missing): it is skipped."""


def weights_dir(flag: str | os.PathLike[str] | None, environ: Mapping[str, str] | None = None) -> Path | None:
    """The folder named by the flag, else by ``$OPENSORA_EVAL_WEIGHTS``; None when neither is set."""
    environ = os.environ if environ is None else environ
    chosen = flag if flag else environ.get(ENV_VAR)
    return Path(chosen) if chosen else None


def find_weights(folder: Path | None, name: str, purpose: str) -> Path:
    """``folder/name``; a MetricUnavailableError naming the file and where to put it when absent."""
    if folder is not None and (folder / name).is_file():
        return folder / name
    where = f"'{folder}'" if folder is not None else f"the folder given by --lpips_weights or ${ENV_VAR}"
    raise MetricUnavailableError(f"needs {name} ({purpose}) in {where}")


def find_lpips_head(folder: Path | None, net: str) -> Path:
    """The LPIPS v0.1 linear-head file for ``net``: in ``folder``, else inside an installed ``lpips``."""
    name = f"{net}.pth"
    if folder is not None and (folder / name).is_file():
        return folder / name
    packaged = _lpips_package_dir()
    if packaged is not None and (packaged / "weights" / "v0.1" / name).is_file():
        return packaged / "weights" / "v0.1" / name
    return find_weights(folder, name, "LPIPS v0.1 linear heads, or pip install lpips, which ships them")


def load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Tensors of a .pth file, loaded without running pickled code."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a truncated or foreign file: the user's input, so one line
        raise OpenSoraError(f"cannot read weights '{path}': {' '.join(str(exc).split())}") from exc
    if not isinstance(state, dict):
        raise OpenSoraError(f"weights '{path}' hold a {type(state).__name__}, not a state dict")
    return state


def _lpips_package_dir() -> Path | None:
    spec = importlib.util.find_spec("lpips")  # locates the package without running its code
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))
