"""Any Hugging Face encoder (BERT-like, MiniLM, ...) behind the text-encoder interface.

:class:`HFTextEncoder` holds what T5 and CLIP share with it: loading, tokenising to a fixed
length, dtype and device handling and optional CPU offload. Subclasses name their transformers
classes and may change what the forward pass returns.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, ClassVar

import torch
from torch import nn

from opensora.errors import ConfigError
from opensora.models.checkpoint_io import parse_dtype
from opensora.models.text_encoder.captions import clean_caption as clean
from opensora.models.text_encoder.loading import load_pretrained
from opensora.registry import MODELS

# Tokenizers without a configured limit report this huge sentinel instead.
_UNSET_LENGTH = 1_000_000


@MODELS.register("hf_encoder")
class HFTextEncoder(nn.Module):
    """``encode(texts) -> {"y": [B, 1, L, C], "mask": [B, L]}`` from a transformers encoder's last hidden state.

    ``from_pretrained`` is a local directory, a hub id or ``package:NAME`` (see ``loading.py``).
    ``model_max_length`` (L) defaults to the class's ``DEFAULT_MAX_LENGTH``, else the tokenizer's
    limit. ``device=None`` means CUDA when available. With ``cpu_offload`` the weights wait on the
    CPU between calls and visit ``device`` only while encoding.
    """

    MODEL_CLASS: ClassVar[str] = "AutoModel"
    TOKENIZER_CLASS: ClassVar[str] = "AutoTokenizer"
    DEFAULT_MAX_LENGTH: ClassVar[int | None] = None  # None: the tokenizer's limit

    def __init__(
        self,
        from_pretrained: str,
        model_max_length: int | None = None,
        dtype: str = "fp32",
        device: str | None = None,
        cache_dir: str | None = None,
        local_files_only: bool = False,
        clean_caption: bool = False,
        cpu_offload: bool = False,
        use_attention_mask: bool = True,
    ) -> None:
        super().__init__()
        self.use_attention_mask = use_attention_mask
        torch_dtype = parse_dtype(dtype)  # before loading, so a typo fails fast
        options: dict[str, Any] = {"cache_dir": cache_dir, "local_files_only": local_files_only}
        self.tokenizer = load_pretrained(self.TOKENIZER_CLASS, from_pretrained, **options)
        # Loading in the target dtype keeps peak memory at one copy; .to() covers transformers < 4.56.
        model = load_pretrained(self.MODEL_CLASS, from_pretrained, dtype=torch_dtype, **options)
        self.model = model.to(torch_dtype).eval().requires_grad_(False)
        if self.tokenizer.pad_token is None and self.tokenizer.eos_token is not None:
            self.tokenizer.pad_token = self.tokenizer.eos_token  # decoder-style tokenizers pad with nothing
        self.model_max_length = model_max_length or self.DEFAULT_MAX_LENGTH or self._default_length()
        self.output_dim: int = self.model.config.hidden_size
        self.clean_caption = clean_caption
        self.cpu_offload = cpu_offload
        self._device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        if not cpu_offload:
            self.model.to(self._device)

    def _default_length(self) -> int:
        length = self.tokenizer.model_max_length
        if length >= _UNSET_LENGTH:
            length = getattr(self.model.config, "max_position_embeddings", None)
        if not length:
            raise ConfigError(f"{type(self).__name__}: the tokenizer sets no length limit; pass model_max_length")
        return int(length)

    @property
    def device(self) -> torch.device:
        """Where encoding runs and where the outputs live."""
        return self._device if self.cpu_offload else next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    def to(self, *args: Any, **kwargs: Any) -> HFTextEncoder:
        device, dtype, non_blocking, _ = torch._C._nn._parse_to(*args, **kwargs)
        if device is not None:
            self._device = device
        if self.cpu_offload:
            # The target device is only remembered; weights go there while encoding.
            return super().to(dtype=dtype, non_blocking=non_blocking) if dtype is not None else self
        return super().to(*args, **kwargs)

    @contextmanager
    def _on_device(self) -> Iterator[None]:
        if not self.cpu_offload:
            yield
            return
        self.model.to(self._device)
        try:
            yield
        finally:
            self.model.to("cpu")
            if self._device.type == "cuda":
                torch.cuda.empty_cache()

    def tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        """``input_ids`` and ``attention_mask``, both [B, L], padded or truncated to ``model_max_length``."""
        if self.clean_caption:
            texts = [clean(text) for text in texts]
        return self.tokenizer(
            texts,
            padding="max_length",
            truncation=True,
            max_length=self.model_max_length,
            return_attention_mask=True,
            return_tensors="pt",
        )

    @torch.no_grad()
    def encode(self, texts: list[str]) -> dict[str, torch.Tensor]:
        tokens = self.tokenize(list(texts))
        with self._on_device():
            device = self.device
            ids, mask = tokens["input_ids"].to(device), tokens["attention_mask"].to(device)
            out = self._forward(ids, mask)
        return {**out, "mask": mask.long()}

    def _forward(self, ids: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
        attention_mask = mask if self.use_attention_mask else None
        states = self.model(input_ids=ids, attention_mask=attention_mask).last_hidden_state  # (B, L, C)
        return {"y": states[:, None]}
