"""Latent statistics for any VAE: raw moments with the normalisation off, and constants that make
the encoded latents zero-mean and unit-scale on the measured data; the tools/ step end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from opensora.config import run_cli
from opensora.models.vae.latent_stats import LatentStats, measure, normalisation_config, unnormalised
from tests.scripts import load_script
from tests.test_dc_ae import tiny_dcae
from tests.test_flux_ae import tiny_ae
from tests.test_hunyuan_vae import tiny_vae as tiny_hunyuan
from tests.test_vae import tiny_vae as tiny_pipeline
from tests.tiny import one_torch_thread, randomise_weights  # noqa: F401 (autouse fixture)
from tests.training.helpers import ROOT, write_clips

BUILDERS = {"pipeline": lambda: randomise_weights(tiny_pipeline()), "hunyuan": tiny_hunyuan, "dc_ae": tiny_dcae,
            "flux": tiny_ae}  # fmt: skip
TOOL = load_script(ROOT / "tools" / "datasets" / "latent_stats.py", "latent_stats_tool")


def videos(count: int = 6, T: int = 4) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    # offset and squeezed pixel values, so the raw latents are neither centred nor unit-scale
    return [(torch.rand(1, 3, T, 16, 16, generator=generator) * 0.8 + 0.1) for _ in range(count)]


def renormalised(vae: torch.nn.Module, config: dict) -> torch.nn.Module:
    """``vae`` rebuilt with the normalisation keys of ``config``, other weights kept."""
    rebuilt = type(vae)(**{**vae.config, **config}).eval()
    rebuilt.load_state_dict({k: v for k, v in vae.state_dict().items() if k not in config}, strict=False)
    return rebuilt


def test_moments_pool_every_batch_and_channel():
    stats = LatentStats(2)
    scale, offset = torch.tensor([2.0, 0.5]).view(1, 2, 1, 1), torch.tensor([1.0, -3.0]).view(1, 2, 1, 1)
    data = torch.randn(5, 2, 3, 4) * scale + offset
    stats.update(data[:2])
    stats.update(data[2:])
    per_channel = data.transpose(0, 1).reshape(2, -1).double()
    assert torch.allclose(stats.mean, per_channel.mean(dim=1)) and torch.allclose(stats.std, per_channel.std(dim=1))
    assert stats.overall_mean == pytest.approx(float(data.double().mean()))
    assert stats.overall_std == pytest.approx(float(data.double().std()))
    assert (stats.samples, stats.count) == (5, 5 * 12)
    with pytest.raises(ValueError, match="3 channels for statistics of 2"):
        stats.update(torch.zeros(1, 3, 2))
    with pytest.raises(ValueError, match="no latents were seen"):
        _ = LatentStats(4).mean


@pytest.mark.parametrize("kind", sorted(BUILDERS))
def test_constants_make_the_measured_latents_zero_mean_and_unit_scale(kind):
    vae = BUILDERS[kind]()
    data = videos()
    with torch.no_grad():
        before = torch.cat([vae.encode(x, sample=False) for x in data])
        stats = measure(vae, iter(data), max_samples=5)
        assert stats.samples == 5  # the sixth video is left out
        after = torch.cat([vae.encode(x, sample=False) for x in data])
        assert torch.equal(before, after)  # the normalisation is back
        config = normalisation_config(vae, stats)
        stats = measure(vae, iter(data))
        z = torch.cat([renormalised(vae, normalisation_config(vae, stats)).encode(x, sample=False) for x in data])
    if kind == "pipeline":  # per channel
        z = z.transpose(0, 1).flatten(1)
        assert torch.allclose(z.mean(dim=1), torch.zeros(4), atol=1e-3)
        assert torch.allclose(z.std(dim=1), torch.ones(4), atol=1e-3)
    else:
        assert float(z.std()) == pytest.approx(1.0, rel=1e-3)
        if kind != "dc_ae":  # the DC-AE has no shift: its latents keep their mean, scaled
            assert abs(float(z.mean())) < 1e-3
    assert set(config) <= set(vae.config)


def test_dc_ae_scaling_factor_is_the_raw_std():
    vae = tiny_dcae()
    with torch.no_grad():
        stats = measure(vae, iter(videos()))
        config = normalisation_config(vae, stats)
        assert config == {"scaling_factor": round(stats.overall_std, 6)}
        z = torch.cat([renormalised(vae, config).encode(x) for x in videos()])
    assert float(z.mean()) == pytest.approx(stats.overall_mean / stats.overall_std, rel=1e-3)


def test_unnormalised_restores_after_an_error():
    vae = tiny_hunyuan(scale_factor=0.5, shift_factor=0.25)
    with pytest.raises(RuntimeError), unnormalised(vae):
        assert (vae.scale_factor, vae.shift_factor) == (1.0, 0.0)
        raise RuntimeError
    assert (vae.scale_factor, vae.shift_factor) == (0.5, 0.25)
    with pytest.raises(TypeError, match="no latent normalisation is known for Linear"):
        normalisation_config(torch.nn.Linear(2, 2), LatentStats(2))


def test_the_tool_measures_a_training_configs_vae(tmp_path: Path, capsys) -> None:
    data = write_clips(tmp_path / "clips")
    (tmp_path / "clips" / "broken.mp4").write_bytes(b"not a video")
    with (tmp_path / "clips" / "meta.csv").open("a") as meta:
        meta.write("broken.mp4,a broken clip,12,32,32\n")
    output = tmp_path / "stats.json"
    argv = ["configs/vae/train/tiny_dc_ae.py", "--data-path", str(data), "--num-samples", "10",
            "--output", str(output)]  # fmt: skip
    result = TOOL.main(argv)
    assert json.loads(output.read_text()) == result == json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["vae"] == "dc_ae" and (result["videos"], result["skipped"]) == (6, 1)
    assert len(result["mean"]) == len(result["std"]) == 16
    assert result["config"] == {"scaling_factor": result["overall_std"]}


def test_the_tool_names_a_missing_dataset_in_one_line(tmp_path: Path, capsys) -> None:
    config = tmp_path / "no_data.py"
    config.write_text("vae = dict(type='dc_ae')\n")
    with pytest.raises(SystemExit) as exit_info:
        run_cli(lambda: TOOL.main([str(config)]))
    assert exit_info.value.code == 2
    expected = f"error: {config} has no 'dataset': give one with --cfg-options dataset=dict(...)"
    assert capsys.readouterr().err.strip() == expected
