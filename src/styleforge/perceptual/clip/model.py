"""CLIP's two towers (ViT image encoder, causal text transformer) in plain torch, with open_clip's parameter names.

The module tree mirrors the ``state_dict`` keys of open_clip's ``CLIP`` (which kept OpenAI's names), so an
open_clip or OpenAI weight file loads with ``load_state_dict`` as it is:

- image: ``visual.conv1`` (patchify, no bias) -> prepend ``visual.class_embedding`` -> add
  ``visual.positional_embedding`` -> ``visual.ln_pre`` -> ``visual.transformer.resblocks.*`` -> ``visual.ln_post`` on
  every token -> token 0 ``@ visual.proj`` ([in, out]);
- text: ``token_embedding`` + ``positional_embedding`` -> ``transformer.resblocks.*`` with an additive causal mask
  (-inf above the diagonal) -> ``ln_final`` -> the row of the end-of-text token (the largest id, so ``argmax``)
  ``@ text_projection`` ([in, out]);
- residual block, pre-norm: ``x + out_proj(attention(ln_1(x)))``, then ``x + c_proj(act(c_fc(ln_2(x))))``, where
  attention is multi-head scaled dot-product with q, k, v stacked in ``in_proj_weight`` [3W, W] in that order;
- LayerNorm eps 1e-5; ``act`` is exact (erf) GELU or QuickGELU ``x * sigmoid(1.702 x)``
  (:attr:`CLIPConfig.quick_gelu`: OpenAI's weights were trained with QuickGELU);
- logits: ``exp(logit_scale) * normalised image features @ normalised text features^T`` (no clamp).

Everything is held to open_clip's own outputs on small random models of the same architecture
(``../shared/fixtures/clip``, ``tests/test_clip.py``).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Dict, Optional

import torch
import torch.nn.functional as F
from torch import nn

from ...errors import StyleforgeError

__all__ = ["CLIPConfig", "CLIP", "MODEL_CONFIGS"]


@dataclass(frozen=True)
class CLIPConfig:
    """Architecture of a ViT CLIP model (open_clip's config fields; heads of the image tower = width // head_width)."""

    embed_dim: int = 512
    image_size: int = 224
    patch_size: int = 32
    vision_width: int = 768
    vision_layers: int = 12
    vision_head_width: int = 64
    context_length: int = 77
    vocab_size: int = 49408
    text_width: int = 512
    text_heads: int = 8
    text_layers: int = 12
    mlp_ratio: float = 4.0
    quick_gelu: bool = False

    @property
    def vision_heads(self) -> int:
        return self.vision_width // self.vision_head_width

    @property
    def grid(self) -> int:
        return self.image_size // self.patch_size

    def validate(self) -> "CLIPConfig":
        problems = []
        if self.image_size % self.patch_size:
            problems.append(f"image_size {self.image_size} is not a multiple of patch_size {self.patch_size}")
        if self.vision_width % self.vision_head_width:
            problems.append(f"vision width {self.vision_width} is not a multiple of head_width {self.vision_head_width}")
        if self.text_width % self.text_heads:
            problems.append(f"text width {self.text_width} is not a multiple of heads {self.text_heads}")
        if min(self.embed_dim, self.vision_layers, self.text_layers, self.context_length, self.vocab_size) < 1:
            problems.append("sizes must be positive")
        if problems:
            raise StyleforgeError("CLIP model config: " + "; ".join(problems), param="clip_model")
        return self

    @classmethod
    def from_open_clip(cls, cfg: Dict[str, Any]) -> "CLIPConfig":
        """From an open_clip model-config dict (``model_configs/<name>.json``): ``embed_dim``, ``quick_gelu``,
        ``vision_cfg`` (image_size, layers, width, patch_size, head_width, mlp_ratio) and ``text_cfg``
        (context_length, vocab_size, width, heads, layers). Only ViT image towers are supported."""
        try:
            v, t = dict(cfg["vision_cfg"]), dict(cfg["text_cfg"])
            if isinstance(v.get("layers"), (list, tuple)) or v.get("timm_model_name") or t.get("hf_model_name"):
                raise StyleforgeError("only ViT image towers with CLIP's own text transformer are supported "
                                      "(not ResNet, timm or Hugging Face towers)", param="clip_model")
            return cls(
                embed_dim=int(cfg["embed_dim"]), quick_gelu=bool(cfg.get("quick_gelu", False)),
                image_size=int(v.get("image_size", 224)), patch_size=int(v.get("patch_size", 16)),
                vision_width=int(v.get("width", 768)), vision_layers=int(v["layers"]),
                vision_head_width=int(v.get("head_width", 64)), mlp_ratio=float(v.get("mlp_ratio", 4.0)),
                context_length=int(t.get("context_length", 77)), vocab_size=int(t.get("vocab_size", 49408)),
                text_width=int(t.get("width", 512)), text_heads=int(t.get("heads", 8)), text_layers=int(t["layers"]),
            ).validate()
        except StyleforgeError:
            raise
        except (KeyError, TypeError, ValueError) as e:
            raise StyleforgeError(f"not an open_clip model config ({type(e).__name__}: {e})", param="clip_model") from None

    def to_json(self) -> Dict[str, Any]:
        return asdict(self)


# open_clip's model_configs for the supported names (facts: ../shared/fixtures/clip/vit_b_32_keys.json)
MODEL_CONFIGS: Dict[str, CLIPConfig] = {
    "ViT-B-32": CLIPConfig(),
    "ViT-B-32-quickgelu": CLIPConfig(quick_gelu=True),
}


class QuickGELU(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


class Attention(nn.Module):
    """Multi-head self-attention with ``nn.MultiheadAttention``'s parameter layout (``in_proj_weight`` [3W, W],
    ``in_proj_bias``, ``out_proj``)."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * width, width))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * width))
        self.out_proj = nn.Linear(width, width)
        nn.init.xavier_uniform_(self.in_proj_weight)

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        n, length, width = x.shape
        q, k, v = F.linear(x, self.in_proj_weight, self.in_proj_bias).chunk(3, dim=-1)
        q, k, v = (t.reshape(n, length, self.heads, width // self.heads).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.out_proj(y.transpose(1, 2).reshape(n, length, width))


class MLP(nn.Module):
    def __init__(self, width: int, hidden: int, quick_gelu: bool):
        super().__init__()
        self.c_fc = nn.Linear(width, hidden)
        self.act = QuickGELU() if quick_gelu else nn.GELU()
        self.c_proj = nn.Linear(hidden, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c_proj(self.act(self.c_fc(x)))


class ResidualBlock(nn.Module):
    def __init__(self, width: int, heads: int, mlp_ratio: float, quick_gelu: bool):
        super().__init__()
        self.ln_1 = nn.LayerNorm(width, eps=1e-5)
        self.attn = Attention(width, heads)
        self.ln_2 = nn.LayerNorm(width, eps=1e-5)
        self.mlp = MLP(width, int(width * mlp_ratio), quick_gelu)

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), mask)
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Module):
    def __init__(self, width: int, layers: int, heads: int, mlp_ratio: float, quick_gelu: bool):
        super().__init__()
        self.resblocks = nn.ModuleList([ResidualBlock(width, heads, mlp_ratio, quick_gelu) for _ in range(layers)])

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        for block in self.resblocks:
            x = block(x, mask)
        return x


class VisionTransformer(nn.Module):
    def __init__(self, cfg: CLIPConfig):
        super().__init__()
        w = cfg.vision_width
        scale = w ** -0.5
        self.conv1 = nn.Conv2d(3, w, kernel_size=cfg.patch_size, stride=cfg.patch_size, bias=False)
        self.class_embedding = nn.Parameter(scale * torch.randn(w))
        self.positional_embedding = nn.Parameter(scale * torch.randn(cfg.grid ** 2 + 1, w))
        self.ln_pre = nn.LayerNorm(w, eps=1e-5)
        self.transformer = Transformer(w, cfg.vision_layers, cfg.vision_heads, cfg.mlp_ratio, cfg.quick_gelu)
        self.ln_post = nn.LayerNorm(w, eps=1e-5)
        self.proj = nn.Parameter(scale * torch.randn(w, cfg.embed_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x).flatten(2).transpose(1, 2)  # [N, grid*grid, W], row-major over the grid
        cls = self.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], dim=1) + self.positional_embedding.to(x.dtype)
        x = self.transformer(self.ln_pre(x))
        return self.ln_post(x)[:, 0] @ self.proj


class CLIP(nn.Module):
    """A ViT CLIP model. ``encode_image(x)`` takes CLIP's normalised input [N, 3, S, S] (see
    :mod:`~styleforge.perceptual.clip.preprocess`); ``encode_text(ids)`` token ids [N, context_length]
    (:class:`~styleforge.perceptual.clip.tokenizer.Tokenizer`). ``forward`` returns
    ``(logits_per_image, logits_per_text)``."""

    def __init__(self, cfg: CLIPConfig = CLIPConfig()):
        super().__init__()
        self.config = cfg.validate()
        self.visual = VisionTransformer(cfg)
        self.transformer = Transformer(cfg.text_width, cfg.text_layers, cfg.text_heads, cfg.mlp_ratio, cfg.quick_gelu)
        self.token_embedding = nn.Embedding(cfg.vocab_size, cfg.text_width)
        self.positional_embedding = nn.Parameter(0.01 * torch.randn(cfg.context_length, cfg.text_width))
        self.ln_final = nn.LayerNorm(cfg.text_width, eps=1e-5)
        self.text_projection = nn.Parameter(cfg.text_width ** -0.5 * torch.randn(cfg.text_width, cfg.embed_dim))
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        mask = torch.full((cfg.context_length, cfg.context_length), float("-inf")).triu(1)
        self.register_buffer("attn_mask", mask, persistent=False)
        self.source: Dict[str, str] = {"model": "custom", "weights": "random initialisation",
                                       "activation": "QuickGELU" if cfg.quick_gelu else "GELU"}
        self._tokenizer = None

    @property
    def image_size(self) -> int:
        return self.config.image_size

    @property
    def tokenizer(self):
        """CLIP's BPE tokenizer for this model's context length (built on first use)."""
        if self._tokenizer is None:
            from .tokenizer import Tokenizer

            if self.config.vocab_size != 49408:
                raise StyleforgeError(f"the model's vocabulary has {self.config.vocab_size} entries; the bundled "
                                      "tokenizer has CLIP's 49408", param="clip_model")
            self._tokenizer = Tokenizer(context_length=self.config.context_length)
        return self._tokenizer

    def describe(self) -> str:
        s = self.source
        return f"{s['model']} ({s['activation']}; {s['weights']})"

    def encode_prompts(self, prompts, normalize: bool = True) -> torch.Tensor:
        """Text features [N, embed_dim] of prompts (a string or a list; see ``Tokenizer.__call__``)."""
        dev = self.positional_embedding.device
        return self.encode_text(self.tokenizer(prompts).to(dev), normalize=normalize)

    def encode_pixels(self, images: torch.Tensor, value_range=(-1.0, 1.0), normalize: bool = True) -> torch.Tensor:
        """Image features of a batch [N, 1|3, H, W] in ``value_range`` through the differentiable preprocessing
        (:func:`~styleforge.perceptual.clip.preprocess.preprocess_tensor`)."""
        from .preprocess import preprocess_tensor

        x = preprocess_tensor(images, self.config.image_size, value_range)
        return self.encode_image(x.to(self.positional_embedding.dtype), normalize=normalize)

    def encode_image(self, images: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        s = self.config.image_size
        if images.ndim != 4 or tuple(images.shape[1:]) != (3, s, s):
            raise ValueError(f"CLIP takes normalised images [N, 3, {s}, {s}], got {list(images.shape)}")
        f = self.visual(images)
        return F.normalize(f, dim=-1) if normalize else f

    def encode_text(self, ids: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        if ids.ndim != 2 or ids.shape[1] != self.config.context_length:
            raise ValueError(f"CLIP takes token ids [N, {self.config.context_length}], got {list(ids.shape)}")
        x = self.token_embedding(ids) + self.positional_embedding
        x = self.ln_final(self.transformer(x, self.attn_mask.to(x.dtype)))
        f = x[torch.arange(x.shape[0], device=x.device), ids.argmax(dim=-1)] @ self.text_projection
        return F.normalize(f, dim=-1) if normalize else f

    def forward(self, images: torch.Tensor, ids: torch.Tensor):
        img = self.encode_image(images, normalize=True)
        txt = self.encode_text(ids, normalize=True)
        logits = self.logit_scale.exp() * img @ txt.t()
        return logits, logits.t()
