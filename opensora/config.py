"""Config files, command-line overrides and their validation against a typed schema.

A config is a Python file read by mmengine (so ``_base_ = ["base.py"]`` inheritance works). Each
entry script declares the top-level keys it understands as a dataclass; defaults live there once.
:func:`load_config` reads the file, applies command-line flags and ``--cfg-options`` entries, and
returns an instance of that dataclass, failing in one line on an unknown key or a wrong type.
Nested dicts (``model``, ``scheduler``, ...) are not checked here: :func:`opensora.registry.build_module`
checks them against the constructor they are passed to.
"""

from __future__ import annotations

import argparse
import ast
import copy
import dataclasses
import os
import sys
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from opensora.errors import ConfigError, OpenSoraError

SchemaT = TypeVar("SchemaT")
ResultT = TypeVar("ResultT")

_MAX_REPR = 60
_WORDS: Mapping[str, object] = types.MappingProxyType(
    {"True": True, "true": True, "False": False, "false": False, "None": None, "none": None, "null": None}
)


# ---------------------------------------------------------------------------------------------
# Loading and overriding
# ---------------------------------------------------------------------------------------------


def load_config(
    path: str | os.PathLike[str],
    schema: type[SchemaT],
    cli_overrides: Mapping[str, object] | None = None,
    cfg_options: Sequence[str] | None = None,
) -> SchemaT:
    """Read ``path``, apply overrides (flags first, then ``--cfg-options``) and validate against ``schema``.

    ``cli_overrides`` maps dotted keys to values; a None value means the flag was not given.
    """
    cfg = read_config(path)
    given = {key: value for key, value in (cli_overrides or {}).items() if value is not None}
    cfg = apply_overrides(cfg, given)
    cfg = apply_overrides(cfg, parse_cfg_options(cfg_options or []))
    return validate(cfg, schema)


def read_config(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The config file at ``path`` as plain nested dicts, with ``_base_`` files merged in."""
    from mmengine.config import Config  # deferred: mmengine is slow to import

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ConfigError(f"config file '{path}' does not exist")
    try:
        # lazy_import=False: the classic ``_base_`` mode, even if the file imports a package
        cfg = Config.fromfile(path, lazy_import=False, format_python_code=False)
    except Exception as exc:  # any failure while executing a user's file is a bad config
        raise ConfigError(f"cannot load config '{path}': {_one_line(exc)}") from exc
    return _to_plain(cfg.to_dict())


def apply_overrides(cfg: Mapping[str, Any], overrides: Mapping[str, object]) -> dict[str, Any]:
    """A copy of ``cfg`` with each dotted key in ``overrides`` set; missing nested dicts are created."""
    result = copy.deepcopy(dict(cfg))
    for dotted, value in overrides.items():
        _set_dotted(result, dotted, _to_plain(value))
    return result


def _set_dotted(cfg: dict[str, Any], dotted: str, value: object) -> None:
    parts = dotted.split(".")
    if not all(parts):
        raise ConfigError(f"malformed config key '{dotted}'")
    node = cfg
    for depth, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            prefix = ".".join(parts[: depth + 1])
            raise ConfigError(f"cannot set '{dotted}': '{prefix}' is a {type(child).__name__}, not a dict")
        node = child
    node[parts[-1]] = value


def parse_cfg_options(entries: Sequence[str]) -> dict[str, object]:
    """``["a.b=1", "c=x"]`` -> ``{"a.b": 1, "c": "x"}``, values parsed by :func:`parse_value`."""
    options: dict[str, object] = {}
    for entry in entries:
        key, sep, text = entry.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"malformed --cfg-options entry '{entry}' (expected key=value)")
        options[key.strip()] = parse_value(text.strip())
    return options


def parse_value(text: str) -> object:
    """Interpret a command-line string: booleans, None, numbers and Python literals; else the string."""
    if text in _WORDS:
        return _WORDS[text]
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return text


def _to_plain(value: Any) -> Any:
    """Unwrap mmengine ConfigDicts (and any other mappings) into plain dicts, recursively."""
    if isinstance(value, Mapping):
        return {key: _to_plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_to_plain(item) for item in value]
    if isinstance(value, tuple):
        return tuple(_to_plain(item) for item in value)
    return value


def _one_line(exc: BaseException) -> str:
    # mmengine's messages span lines (syntax errors quote the source); an error here must be one line
    return f"{type(exc).__name__}: {' '.join(str(exc).split())}"


# ---------------------------------------------------------------------------------------------
# Validation against a dataclass schema
# ---------------------------------------------------------------------------------------------


def validate(cfg: Mapping[str, Any], schema: type[SchemaT]) -> SchemaT:
    """Check ``cfg``'s top-level keys and types against the dataclass ``schema`` and build it.

    Keys starting with ``_`` (mmengine's ``_base_`` and friends) are ignored. A schema may name keys
    of other configs (the releases') that it refuses with a reason, as ``KEYS_WITHOUT_EFFECT``:
    ``{key: why it would have no effect}``.
    """
    if not dataclasses.is_dataclass(schema):
        raise TypeError(f"schema must be a dataclass, got {schema!r}")
    fields = {field.name: field for field in dataclasses.fields(schema) if field.init}
    hints = typing.get_type_hints(schema)
    values = {key: value for key, value in cfg.items() if not key.startswith("_")}
    without_effect = getattr(schema, "KEYS_WITHOUT_EFFECT", {})
    for key in values:
        if key in without_effect and key not in fields:
            raise ConfigError(f"config key '{key}' would have no effect here ({without_effect[key]}): remove it")
        if key not in fields:
            raise ConfigError(f"unknown config key '{key}' (known: {', '.join(sorted(fields))})")
    for name, field in fields.items():
        no_default = field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING
        if no_default and name not in values:
            raise ConfigError(f"missing required config key '{name}'")
    checked = {key: check_type(key, _to_plain(value), hints[key]) for key, value in values.items()}
    return schema(**checked)


def check_type(key: str, value: Any, annotation: Any) -> Any:
    """``value`` if it fits ``annotation`` (ints widened to float, lists to tuple), else ConfigError."""
    ok, converted = _convert(value, annotation)
    if not ok:
        shown = repr(value)
        if len(shown) > _MAX_REPR:
            shown = shown[: _MAX_REPR - 3] + "..."
        raise ConfigError(f"config key '{key}' expects {_describe(annotation)}, got {type(value).__name__} {shown}")
    return converted


def _convert(value: Any, annotation: Any) -> tuple[bool, Any]:
    """(fits, converted value). Element types of list/tuple are checked; dict contents are not."""
    if annotation in (Any, object):
        return True, value
    if annotation is None or annotation is type(None):
        return value is None, value
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (types.UnionType, typing.Union):
        for arg in args:
            ok, converted = _convert(value, arg)
            if ok:
                return True, converted
        return False, value
    if origin is typing.Literal:
        return any(value == arg and type(value) is type(arg) for arg in args), value
    if origin in (list, tuple) or annotation in (list, tuple):
        return _convert_sequence(value, origin or annotation, args)
    if origin is dict or annotation is dict:
        return isinstance(value, Mapping), value
    return _convert_scalar(value, annotation)


def _convert_scalar(value: Any, annotation: Any) -> tuple[bool, Any]:
    # bool is a subclass of int, so True must not pass as an int or a float (and 1 not as a bool)
    if annotation is bool:
        return isinstance(value, bool), value
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if annotation is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        return ok, float(value) if ok else value
    if isinstance(annotation, type):
        return isinstance(value, annotation), value
    return True, value  # an annotation form we do not check (e.g. a Callable)


def _convert_sequence(value: Any, container: type, args: tuple[Any, ...]) -> tuple[bool, Any]:
    if not isinstance(value, list | tuple):
        return False, value
    if container is tuple and args and args[-1] is not Ellipsis:
        if len(value) != len(args):
            return False, value
        item_types = args
    else:
        item_types = (args[0] if args else Any,) * len(value)
    items = []
    for item, item_type in zip(value, item_types, strict=True):
        ok, converted = _convert(item, item_type)
        if not ok:
            return False, value
        items.append(converted)
    return True, container(items)


def _describe(annotation: Any) -> str:
    if annotation is type(None) or annotation is None:
        return "None"
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (types.UnionType, typing.Union):
        return " | ".join(_describe(arg) for arg in args)
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(arg) for arg in args)
    if origin is not None:
        return repr(annotation).replace("typing.", "")
    return getattr(annotation, "__name__", repr(annotation))


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------


def parse_bool(text: str) -> bool:
    """``true``/``1`` -> True and ``false``/``0`` -> False (any case); anything else is an argparse error."""
    lowered = text.strip().lower()
    if lowered in ("true", "1"):
        return True
    if lowered in ("false", "0"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


@dataclasses.dataclass(frozen=True)
class Flag:
    """A command-line flag that sets one dotted config key, e.g. ``--ckpt-path`` -> ``model.from_pretrained``."""

    name: str
    key: str
    type: Callable[[str], object] = str
    help: str = ""
    nargs: int | str | None = None
    choices: tuple[object, ...] | None = None
    aliases: tuple[str, ...] = ()  # further spellings, e.g. the release's ``--num_frames`` for ``--num-frames``


_STANDARD_FLAGS = (
    Flag("--ckpt-path", "model.from_pretrained", help="model checkpoint to load"),
    Flag("--flash-attn", "model.enable_flash_attn", parse_bool, "use flash attention"),
    Flag("--layernorm-kernel", "model.enable_layernorm_kernel", parse_bool, "use the fused layernorm kernel"),
    Flag("--seed", "seed", int, "random seed"),
    Flag("--dtype", "dtype", str, "compute dtype", choices=("fp32", "fp16", "bf16")),
    Flag("--batch-size", "batch_size", int, "samples per batch"),
    Flag("--data-path", "dataset.data_path", help="dataset metadata file"),
    Flag("--outputs", "outputs", help="output directory"),
    Flag("--prompt", "prompt", help="one or more text prompts", nargs="+"),
    Flag("--prompt-path", "prompt_path", help="text file with one prompt per line"),
    Flag("--num-frames", "num_frames", parse_value, "frame count (int) or a duration such as 4s",
         aliases=("--num_frames",)),
    Flag("--resolution", "resolution", help="resolution name such as 480p, 720p or (2.0) 256px, 768px"),
    Flag("--aspect-ratio", "aspect_ratio", help="aspect ratio: H:W such as 9:16 (1.x), W:H such as 16:9 (2.0)",
         aliases=("--aspect_ratio",)),
    Flag("--image-size", "image_size", int, "height and width in pixels", nargs=2),
    Flag("--fps", "fps", int, "frame rate the model is conditioned on"),
    Flag("--save-fps", "save_fps", int, "frame rate of saved videos"),
    Flag("--num-sampling-steps", "scheduler.num_sampling_steps", int, "denoising steps"),
    Flag("--cfg-scale", "scheduler.cfg_scale", float, "classifier-free guidance scale"),
    Flag("--num-sample", "num_sample", int, "samples per prompt"),
    Flag("--start-index", "start_index", int, "first prompt to use"),
    Flag("--end-index", "end_index", int, "prompt index to stop before"),
    Flag("--loop", "loop", int, "number of extension loops"),
    Flag("--reference-path", "reference_path", help="reference images or videos", nargs="+", aliases=("--ref",)),
    Flag("--mask-strategy", "mask_strategy", help="mask strategies, one per prompt", nargs="+"),
    Flag("--aes", "aes", float, "aesthetic score to condition on"),
    Flag("--flow", "flow", float, "motion score to condition on"),
    Flag("--load", "load", help="training checkpoint directory to resume from"),
    Flag("--lr", "lr", float, "learning rate"),
    Flag("--epochs", "epochs", int, "training epochs"),
    Flag("--wandb", "wandb", parse_bool, "log to Weights & Biases"),
)
STANDARD_FLAGS: Mapping[str, Flag] = types.MappingProxyType({flag.name: flag for flag in _STANDARD_FLAGS})


def standard_flags(*names: str) -> list[Flag]:
    """The release's flags by name, e.g. ``standard_flags("--ckpt-path", "--seed")``."""
    unknown = [name for name in names if name not in STANDARD_FLAGS]
    if unknown:
        raise KeyError(f"no standard flag {', '.join(unknown)}; known: {', '.join(STANDARD_FLAGS)}")
    return [STANDARD_FLAGS[name] for name in names]


def make_parser(
    description: str, flags: Sequence[Flag], default_config: str | os.PathLike[str] | None = None
) -> argparse.ArgumentParser:
    """An argparse parser with a positional ``config``, ``flags`` and ``--cfg-options``.

    Each flag's destination is its dotted config key and its default is None ("not given").
    With ``default_config`` the config may be left out.
    """
    parser = argparse.ArgumentParser(description=description)
    if default_config is None:
        parser.add_argument("config", help="config file (.py)")
    else:
        parser.add_argument("config", nargs="?", default=os.fspath(default_config),
                            help=f"config file (.py); default {default_config}")  # fmt: skip
    seen: set[str] = set()
    for flag in flags:
        if flag.key in seen or flag.key in ("config", "cfg_options"):
            raise ValueError(f"flag {flag.name}: config key '{flag.key}' is already set by another flag")
        seen.add(flag.key)
        metavar = "{true,false}" if flag.type is parse_bool else flag.key.rsplit(".", 1)[-1].upper()
        parser.add_argument(
            flag.name,
            *flag.aliases,
            dest=flag.key,
            type=flag.type,
            nargs=flag.nargs,
            choices=flag.choices,
            default=None,
            metavar=None if flag.choices else metavar,
            help=f"{flag.help} (sets {flag.key})".lstrip(),
        )
    parser.add_argument(
        "--cfg-options",
        dest="cfg_options",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="override any config key, e.g. model.depth=2 scheduler.use_timestep_transform=False",
    )
    return parser


def parse_cli(
    parser: argparse.ArgumentParser, argv: Sequence[str] | None = None
) -> tuple[str, dict[str, object], list[str]]:
    """Parse ``argv`` into (config path, {dotted key: value} for the flags given, cfg-options entries)."""
    namespace = vars(parser.parse_args(argv))
    config_path = namespace.pop("config")
    cfg_options = list(namespace.pop("cfg_options"))
    overrides = {key: value for key, value in namespace.items() if value is not None}
    return config_path, overrides, cfg_options


def run_cli(main: Callable[[], ResultT]) -> ResultT:
    """Call ``main()``; on an OpenSoraError print ``error: <message>`` as one line and exit with 2.

    Other exceptions are bugs and keep their traceback.
    """
    try:
        return main()
    except OpenSoraError as exc:
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        raise SystemExit(2) from None
