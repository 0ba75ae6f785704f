"""Config loading, overrides, schema validation and the command-line helpers."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import pytest

from opensora.config import (
    Flag,
    apply_overrides,
    load_config,
    make_parser,
    parse_cfg_options,
    parse_cli,
    parse_value,
    read_config,
    run_cli,
    standard_flags,
    validate,
)
from opensora.errors import ConfigError

CONFIGS = Path(__file__).parent / "data" / "configs"


@dataclass
class Schema:
    model: dict
    seed: int = 42
    dtype: Literal["fp32", "fp16", "bf16"] = "bf16"
    scheduler: dict = field(default_factory=dict)
    cfg_scale: float = 7.0
    flash: bool = False
    image_size: tuple[int, int] | None = None
    prompt: list[str] | None = None
    extra: Any = None


def test_base_inheritance_merges_nested_dicts() -> None:
    cfg = load_config(CONFIGS / "child.py", Schema)
    assert cfg.seed == 7
    assert cfg.model == {"type": "TinyNet", "depth": 4, "hidden_size": 8}
    assert type(cfg.model) is dict  # mmengine ConfigDict unwrapped
    assert cfg.scheduler["num_sampling_steps"] == 30
    assert cfg.dtype == "bf16"


def test_cli_overrides_skip_none_and_set_nested() -> None:
    overrides = {"seed": None, "model.from_pretrained": "ckpt.pt", "model.enable_flash_attn": False}
    cfg = load_config(CONFIGS / "base.py", Schema, cli_overrides=overrides)
    assert cfg.seed == 42
    assert cfg.model["from_pretrained"] == "ckpt.pt"
    assert cfg.model["enable_flash_attn"] is False


def test_cfg_options_override_nested_and_parse_values() -> None:
    options = ["model.depth=6", "model.enable_flash_attn=False", "scheduler.sub.x=1.5", "cfg_scale=4", "extra=[1,2]"]
    cfg = load_config(CONFIGS / "base.py", Schema, cfg_options=options)
    assert cfg.model["depth"] == 6
    assert cfg.model["enable_flash_attn"] is False
    assert cfg.scheduler["sub"] == {"x": 1.5}  # missing intermediate dicts are created
    assert cfg.cfg_scale == 4.0 and isinstance(cfg.cfg_scale, float)
    assert cfg.extra == [1, 2]


def test_cfg_options_win_over_flags() -> None:
    cfg = load_config(CONFIGS / "base.py", Schema, cli_overrides={"seed": 1}, cfg_options=["seed=2"])
    assert cfg.seed == 2


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("False", False),
        ("false", False),
        ("True", True),
        ("true", True),
        ("None", None),
        ("null", None),
        ("3", 3),
        ("1e-4", 1e-4),
        ("[1,2]", [1, 2]),
        ("(1,2)", (1, 2)),
        ("{'a':1}", {"a": 1}),
        ("bf16", "bf16"),
        ("a b", "a b"),
        ("", ""),
    ],
)
def test_parse_value(text: str, expected: object) -> None:
    value = parse_value(text)
    assert value == expected and type(value) is type(expected)


def test_malformed_cfg_option() -> None:
    with pytest.raises(ConfigError, match="malformed --cfg-options entry 'model.depth'"):
        parse_cfg_options(["model.depth"])


def test_override_through_non_dict_fails() -> None:
    with pytest.raises(ConfigError, match="'seed' is a int, not a dict"):
        apply_overrides({"seed": 1}, {"seed.x": 2})


def test_unknown_key_names_it() -> None:
    with pytest.raises(ConfigError) as info:
        load_config(CONFIGS / "base.py", Schema, cfg_options=["foo=1"])
    assert str(info.value).startswith("unknown config key 'foo' (known: cfg_scale, dtype, extra, flash")


def test_wrong_type_message() -> None:
    with pytest.raises(ConfigError) as info:
        load_config(CONFIGS / "base.py", Schema, cfg_options=["seed=abc"])
    assert str(info.value) == "config key 'seed' expects int, got str 'abc'"


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("seed", True),
        ("seed", 1.5),
        ("flash", 1),
        ("cfg_scale", "x"),
        ("dtype", "fp8"),
        ("image_size", [1, 2, 3]),
        ("image_size", ["a", 2]),
        ("prompt", "one"),
        ("model", [1]),
    ],
)
def test_type_checks_reject(key: str, value: object) -> None:
    with pytest.raises(ConfigError, match=f"config key '{key}' expects"):
        validate({"model": {}, key: value}, Schema)


def test_type_checks_convert() -> None:
    cfg = validate({"model": {}, "image_size": [4, 8], "prompt": ["a", "b"], "flash": True, "_base_": "x"}, Schema)
    assert cfg.image_size == (4, 8)
    assert cfg.prompt == ["a", "b"]
    assert cfg.flash is True


def test_missing_required_key() -> None:
    with pytest.raises(ConfigError, match="missing required config key 'model'"):
        validate({"seed": 1}, Schema)


def test_missing_and_broken_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.py", Schema)
    broken = tmp_path / "broken.py"
    broken.write_text("seed = (\n")
    with pytest.raises(ConfigError) as info:
        load_config(broken, Schema)
    assert str(broken) in str(info.value) and "\n" not in str(info.value)


def _parser():
    extra = Flag("--steps", "scheduler.num_sampling_steps", int)
    return make_parser("test", [*standard_flags("--ckpt-path", "--flash-attn", "--seed", "--prompt"), extra])


@pytest.mark.parametrize(("text", "expected"), [("False", False), ("false", False), ("0", False), ("true", True)])
def test_bool_flag_parses_value(text: str, expected: bool) -> None:
    _, overrides, _ = parse_cli(_parser(), ["cfg.py", "--flash-attn", text])
    assert overrides == {"model.enable_flash_attn": expected}


def test_bool_flag_rejects_other_values(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        parse_cli(_parser(), ["cfg.py", "--flash-attn", "maybe"])
    assert info.value.code == 2
    assert "expected true or false" in capsys.readouterr().err


def test_parse_cli_collects_given_flags_only() -> None:
    argv = [
        "cfg.py",
        "--ckpt-path",
        "w.pt",
        "--seed",
        "3",
        "--prompt",
        "a cat",
        "a dog",
        "--steps",
        "10",
        "--cfg-options",
        "model.depth=2",
        "dtype=fp16",
    ]
    path, overrides, options = parse_cli(_parser(), argv)
    assert path == "cfg.py"
    assert overrides == {
        "model.from_pretrained": "w.pt",
        "seed": 3,
        "prompt": ["a cat", "a dog"],
        "scheduler.num_sampling_steps": 10,
    }
    assert options == ["model.depth=2", "dtype=fp16"]
    assert parse_cli(_parser(), ["cfg.py"]) == ("cfg.py", {}, [])


def test_end_to_end_cli_to_schema() -> None:
    argv = [str(CONFIGS / "child.py"), "--flash-attn", "False", "--seed", "5", "--cfg-options", "model.depth=1"]
    path, overrides, options = parse_cli(_parser(), argv)
    cfg = load_config(path, Schema, overrides, options)
    assert cfg.seed == 5
    assert cfg.model == {"type": "TinyNet", "depth": 1, "hidden_size": 8, "enable_flash_attn": False}


def test_duplicate_flag_keys_rejected() -> None:
    with pytest.raises(ValueError, match="already set"):
        make_parser("x", [Flag("--a", "seed"), Flag("--b", "seed")])


def test_run_cli_prints_one_line_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    def main() -> None:
        raise ConfigError("unknown config key 'foo'\n(second line folded)")

    with pytest.raises(SystemExit) as info:
        run_cli(main)
    assert info.value.code == 2
    captured = capsys.readouterr()
    assert captured.err == "error: unknown config key 'foo' (second line folded)\n"
    assert captured.out == ""


def test_run_cli_returns_result_and_lets_bugs_through() -> None:
    assert run_cli(lambda: 3) == 3
    with pytest.raises(ZeroDivisionError):
        run_cli(lambda: 1 / 0)


def test_run_cli_in_subprocess(tmp_path: Path) -> None:
    script = tmp_path / "script.py"
    script.write_text(
        textwrap.dedent(f"""
        from dataclasses import dataclass
        from opensora.config import load_config, run_cli

        @dataclass
        class S:
            seed: int = 0

        run_cli(lambda: load_config({str(CONFIGS / "base.py")!r}, S))
    """)
    )
    # the child must import this checkout's opensora whether or not it is installed
    repo_root = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [repo_root, os.environ.get("PYTHONPATH")]))}
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, check=False, env=env)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith("error: unknown config key 'dtype'")


def test_a_default_config_may_be_left_out() -> None:
    from opensora.config import make_parser, parse_cli, standard_flags

    parser = make_parser("x", standard_flags("--prompt"), default_config="configs/demo/inference.py")
    assert parse_cli(parser, ["--prompt", "a cat"])[0] == "configs/demo/inference.py"
    assert parse_cli(parser, ["other.py", "--prompt", "a cat"])[0] == "other.py"


@dataclass
class WithRetiredKeys:
    seed: int = 0
    KEYS_WITHOUT_EFFECT: ClassVar[dict[str, str]] = {"old_switch": "it is always on here"}


def test_keys_without_effect_are_refused_with_their_reason() -> None:
    with pytest.raises(ConfigError, match=r"^config key 'old_switch' would have no effect here \(it is always on"):
        validate({"old_switch": 1}, WithRetiredKeys)
    with pytest.raises(ConfigError, match="unknown config key 'other'"):
        validate({"other": 1}, WithRetiredKeys)


# ---- defaults stated once ----------------------------------------------------------------------


def test_scheduler_defaults_are_the_schedulers_own() -> None:
    """An inference or training config that names no scheduler gets RectifiedFlow's documented defaults."""
    from opensora.inference.config import InferenceConfig
    from opensora.registry import SCHEDULERS, build_module
    from opensora.schedulers.rectified_flow import RectifiedFlow
    from opensora.training.config import TrainConfig

    documented = dict(num_sampling_steps=10, cfg_scale=4.0, sample_method="uniform", use_timestep_transform=False)
    defaults = vars(RectifiedFlow())
    assert {key: defaults[key] for key in documented} == documented
    for cfg in (InferenceConfig(model={}, text_encoder={}), TrainConfig(model={})):
        assert vars(build_module(cfg.scheduler, SCHEDULERS)) == defaults, type(cfg).__name__


def test_loop_defaults_are_the_pipelines() -> None:
    from opensora.inference.config import InferenceConfig
    from opensora.inference.pipeline import LoopSettings

    cfg = InferenceConfig(model={}, text_encoder={})
    assert LoopSettings(cfg.loop, cfg.condition_frame_length, cfg.condition_frame_edit, cfg.align) == LoopSettings()


def test_training_dataset_defaults_are_the_datasets_own() -> None:
    import inspect

    from opensora.registry import DATASETS, import_builtin_modules
    from opensora.training.config import TrainConfig, VAETrainConfig

    import_builtin_modules()
    for cfg in (TrainConfig(model={}), VAETrainConfig(model={})):
        dataset = dict(cfg.dataset)
        params = inspect.signature(DATASETS.get(dataset.pop("type"))).parameters
        restated = [key for key, value in dataset.items() if params[key].default == value]
        assert not restated, f"{type(cfg).__name__} restates the dataset's defaults {restated}"


def test_a_child_dict_merges_into_its_base_key_by_key():
    """configs/demo/train.py names three mask kinds; the other seven of 1.2's stage 1 stay (as the
    shipped demo model was trained), which its comment states: a dict override does not replace."""
    configs = Path(__file__).resolve().parents[1] / "configs"
    demo, stage1 = read_config(configs / "demo/train.py"), read_config(configs / "opensora-v1-2/train/stage1.py")
    assert demo["mask_ratios"].keys() == stage1["mask_ratios"].keys()
    assert demo["mask_ratios"]["image_head"] == 0.1 and abs(sum(demo["mask_ratios"].values()) - 0.245) < 1e-9
