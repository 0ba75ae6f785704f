"""FLOPs of one MMDiT training step, per sample, counted from the architecture.

Notation (per sample): ``h`` hidden size, ``m = int(h * mlp_ratio)``, ``c`` in_channels, ``p``
patch size, ``N_img`` and ``N_txt`` image and text tokens, ``L = N_txt + N_img`` the joint
sequence, ``D`` double blocks, ``S`` single blocks.

Forward FLOPs ``F`` (one multiply-add = 2 FLOPs; biases, norms, rope, activations and softmax are
elementwise and not counted, as is usual for MFU):

* every Linear ``in -> out`` applied to ``n`` rows costs ``2 * n * in * out``:

  - embedders: ``img_in`` (N_img, c -> h), ``cond_in`` (N_img, c + p^2 -> h, if cond_embed),
    ``txt_in`` (N_txt, context_in_dim -> h), and the vector MLPs on one row each:
    ``time_in`` (256 -> h -> h), ``vector_in`` (vec_in_dim -> h -> h), ``guidance_in``
    (256 -> h -> h, if guidance_embed);
  - each double block, for the image stream (n = N_img) and the text stream (n = N_txt)
    separately, as each has its own weights: modulation (1 row, h -> 6h), q/k/v (h -> 3h),
    output projection (h -> h), MLP (h -> m -> h);
  - each single block on the joint sequence (n = L): modulation (1 row, h -> 3h), the fused
    q/k/v + MLP input (h -> 3h + m), the output (h + m -> h);
  - the final layer: adaLN modulation (1 row, h -> 2h) and the projection (N_img, h -> c);

  (unfused q/k/v projections have the same shapes in total, hence the same count);
* attention in every block over the joint sequence: ``4 * L^2 * h`` (scores ``Q K^T``
  ``2 * L^2 * h`` summed over heads, and the same again for ``weights @ V``).

A training step is ``model = 3 * F`` (the backward of a matmul is two matmuls of its size: the
input gradient and the weight gradient). Activation checkpointing recomputes the forward of every
block in the backward, so the hardware executes ``hardware = 3 * F + F_blocks``; MFU counts only
``model`` FLOPs, so checkpointing lowers MFU rather than inflating it.

A FLOP counter on a real step measures slightly less than ``3 * F``: the layers that read the
inputs (img_in, cond_in, txt_in, the first layers of the vector MLPs) need no input gradient, so
their backward is 1x instead of 2x. The convention (PaLM's and torchtitan's ``6 * N`` rule) counts
3x throughout; the difference is under 0.1% at the release size.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from opensora.errors import ConfigError
from opensora.models.mmdit.mmdit import TIME_EMBED_DIM, MMDiT


@dataclass(frozen=True)
class Matmul:
    """``count`` Linear layers ``in_features -> out_features``, each applied to ``rows`` rows of one sample."""

    name: str
    rows: int
    in_features: int
    out_features: int
    count: int = 1
    reads_input: bool = False  # its input is a model input, so the backward computes no input gradient

    @property
    def weights(self) -> int:
        return self.count * self.in_features * self.out_features

    @property
    def flops(self) -> int:
        return 2 * self.rows * self.weights


@dataclass(frozen=True)
class TrainFlops:
    """FLOPs of one training step of one sample: ``model`` for MFU, ``hardware`` as executed."""

    forward: int
    blocks_forward: int  # the part of ``forward`` inside the double and single blocks
    grad_checkpoint: bool

    @property
    def model(self) -> int:
        return 3 * self.forward

    @property
    def hardware(self) -> int:
        return self.model + (self.blocks_forward if self.grad_checkpoint else 0)


def mmdit_arguments(config: Mapping[str, Any]) -> dict[str, Any]:
    """``config`` over the defaults of :class:`MMDiT` (the 11B release); an unknown key is an error."""
    defaults = {
        name: param.default
        for name, param in inspect.signature(MMDiT.__init__).parameters.items()
        if param.default is not inspect.Parameter.empty
    }
    unknown = sorted(set(config) - set(defaults) - {"type", "from_pretrained", *MMDiT.IGNORED_CONFIG_KEYS})
    if unknown:
        raise ConfigError(f"MMDiT has no argument {', '.join(unknown)} (known: {', '.join(defaults)})")
    return {**defaults, **{k: v for k, v in config.items() if k in defaults}}


def _embedders(cfg: Mapping[str, Any], h: int, n_img: int, n_txt: int) -> list[Matmul]:
    c, cond = cfg["in_channels"], cfg["in_channels"] + cfg["patch_size"] ** 2
    layers = [Matmul("img_in", n_img, c, h, reads_input=True)]
    if cfg["cond_embed"]:
        layers.append(Matmul("cond_in", n_img, cond, h, reads_input=True))
    layers.append(Matmul("txt_in", n_txt, cfg["context_in_dim"], h, reads_input=True))
    vector_inputs = {"time_in": TIME_EMBED_DIM, "vector_in": cfg["vec_in_dim"]}
    if cfg["guidance_embed"]:
        vector_inputs["guidance_in"] = TIME_EMBED_DIM
    for name, width in vector_inputs.items():
        layers += [Matmul(f"{name}.in", 1, width, h, reads_input=True), Matmul(f"{name}.out", 1, h, h)]
    return layers


def _double_blocks(h: int, m: int, depth: int, n_img: int, n_txt: int) -> list[Matmul]:
    layers = []
    for stream, n in (("img", n_img), ("txt", n_txt)):
        layers += [
            Matmul(f"double.{stream}.mod", 1, h, 6 * h, depth),
            Matmul(f"double.{stream}.qkv", n, h, 3 * h, depth),
            Matmul(f"double.{stream}.proj", n, h, h, depth),
            Matmul(f"double.{stream}.mlp_in", n, h, m, depth),
            Matmul(f"double.{stream}.mlp_out", n, m, h, depth),
        ]
    return layers


def _single_blocks(h: int, m: int, depth: int, length: int) -> list[Matmul]:
    return [
        Matmul("single.mod", 1, h, 3 * h, depth),
        Matmul("single.linear1", length, h, 3 * h + m, depth),  # q, k, v and the MLP input
        Matmul("single.linear2", length, h + m, h, depth),
    ]


def mmdit_matmuls(config: Mapping[str, Any], image_tokens: int, text_tokens: int) -> list[Matmul]:
    """Every Linear of the MMDiT ``config`` (see :func:`mmdit_arguments`) with its rows per sample."""
    cfg = mmdit_arguments(config)
    h = cfg["hidden_size"]
    m = int(h * cfg["mlp_ratio"])
    return [
        *_embedders(cfg, h, image_tokens, text_tokens),
        *_double_blocks(h, m, cfg["depth"], image_tokens, text_tokens),
        *_single_blocks(h, m, cfg["depth_single_blocks"], image_tokens + text_tokens),
        Matmul("final.adaLN", 1, h, 2 * h),
        Matmul("final.linear", image_tokens, h, cfg["in_channels"]),
    ]


def attention_flops(config: Mapping[str, Any], image_tokens: int, text_tokens: int) -> int:
    """``4 * L^2 * h`` per block (scores and values) over the joint sequence, for all blocks."""
    cfg = mmdit_arguments(config)
    length = image_tokens + text_tokens
    return 4 * length**2 * cfg["hidden_size"] * (cfg["depth"] + cfg["depth_single_blocks"])


def mmdit_train_flops(
    config: Mapping[str, Any], image_tokens: int, text_tokens: int, grad_checkpoint: bool = False
) -> TrainFlops:
    """FLOPs of one training step of one sample (see the module docstring for the formula)."""
    if image_tokens < 1 or text_tokens < 0:
        raise ConfigError(f"need >= 1 image token and >= 0 text tokens, got {image_tokens} and {text_tokens}")
    matmuls = mmdit_matmuls(config, image_tokens, text_tokens)
    attention = attention_flops(config, image_tokens, text_tokens)
    blocks = sum(mm.flops for mm in matmuls if mm.name.startswith(("double.", "single."))) + attention
    return TrainFlops(sum(mm.flops for mm in matmuls) + attention, blocks, grad_checkpoint)
