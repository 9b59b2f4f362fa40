"""Find, check and load CLIP weights: ``load_clip(model="ViT-B-32", weights="openai")``.

- ``model``: a known name (:data:`~styleforge.perceptual.clip.model.MODEL_CONFIGS`: ``ViT-B-32``,
  ``ViT-B-32-quickgelu``) or the path of an open_clip model-config JSON (``{"embed_dim", "vision_cfg",
  "text_cfg", "quick_gelu"}``), for other ViT sizes or small test models.
- ``weights``: a local file (open_clip safetensors / ``.bin`` / ``.pt`` state dict, or OpenAI's TorchScript
  ``.pt``), or a tag (``openai``) that names a file of the styleforge cache
  (:func:`styleforge.utils.cache.clip_weights_name`), downloaded only when allowed. Offline without the file,
  the error names it, where to put it and its URL, at once (nothing retries).

The activation follows the weights: OpenAI's weights were trained with QuickGELU, so a file recognised as
OpenAI's (the ``openai`` tag, or a TorchScript archive with OpenAI's three extra entries ``input_resolution``,
``context_length``, ``vocab_size``) gets QuickGELU whichever of the two ViT-B-32 names was asked for (open_clip's
``ViT-B-32`` + ``pretrained='openai'`` silently builds GELU, 2e-3 / 1.3e-2 off). Otherwise the config decides.

Every tensor of the file must be a tensor of the model, with the model's shape (a weights file of another model
is refused naming the first key that differs); tensors are cast to float32.
"""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path
from typing import Optional, Tuple, Union

import torch

from ...errors import StyleforgeError
from ...utils.progress import Callback, reporter
from .model import CLIP, MODEL_CONFIGS, CLIPConfig
from .weights import read_state_dict

__all__ = ["load_clip", "resolve_config", "resolve_weights", "WEIGHT_TAGS"]

WEIGHT_TAGS = ("openai",)
"""Weight tags known for the built-in model names (each a file in ``utils.cache.KNOWN_FILES``)."""

_OPENAI_EXTRAS = ("input_resolution", "context_length", "vocab_size")


def resolve_config(model: Union[str, os.PathLike, CLIPConfig]) -> Tuple[str, CLIPConfig]:
    """(name, config) of a model name, an open_clip config JSON path, or a config."""
    if isinstance(model, CLIPConfig):
        return "custom", model.validate()
    text = os.fspath(model)
    if text in MODEL_CONFIGS:
        return text, MODEL_CONFIGS[text]
    p = Path(text).expanduser()
    if p.suffix.lower() == ".json" or p.is_file():
        if not p.is_file():
            raise StyleforgeError(f"{p}: no such model config file", param="clip_model")
        try:
            cfg = json.loads(p.read_text())
        except (OSError, ValueError) as e:
            raise StyleforgeError(f"{p}: not a readable JSON model config ({type(e).__name__})",
                                  param="clip_model") from None
        if not isinstance(cfg, dict):
            raise StyleforgeError(f"{p}: not an open_clip model config", param="clip_model")
        return p.stem, CLIPConfig.from_open_clip(cfg)
    raise StyleforgeError(f"unknown model; use {' or '.join(MODEL_CONFIGS)}, or the path of an open_clip model "
                          "config .json", param="clip_model", value=text)


def resolve_weights(weights: Union[str, os.PathLike], model_name: str = "ViT-B-32",
                    allow_download: Optional[bool] = None, callback: Optional[Callback] = None) -> Path:
    """A local file for ``weights`` (a path, or a tag of ``model_name`` from the cache / a permitted download)."""
    from ...utils.cache import KNOWN_FILES, clip_weights_name, resolve_file

    text = os.fspath(weights)
    p = Path(text).expanduser()
    if p.is_file():
        return p
    if text.lower() in WEIGHT_TAGS:
        name = clip_weights_name(model_name, text)
        if name not in KNOWN_FILES:
            raise StyleforgeError(f"no {text!r} weights are known for model {model_name}; pass a local weights file",
                                  param="clip_weights")
        return resolve_file(name, allow_download, what="CLIP weights", callback=callback)
    raise StyleforgeError(f"{p}: no such file; {{name}} is a local CLIP weights file (open_clip safetensors/.bin, "
                          f"OpenAI's .pt) or a tag ({', '.join(WEIGHT_TAGS)})", param="clip_weights",
                          label="CLIP weights")


def load_clip(model: Union[str, os.PathLike, CLIPConfig] = "ViT-B-32", weights: Union[str, os.PathLike] = "openai",
              device: Union[str, torch.device] = "cpu", allow_download: Optional[bool] = None,
              callback: Optional[Callback] = None) -> CLIP:
    """A frozen, eval-mode :class:`CLIP` on ``device`` with ``weights`` loaded (see the module docstring).
    ``model.describe()`` says what was loaded (name, activation, file, format)."""
    name, cfg = resolve_config(model)
    path = resolve_weights(weights, name, allow_download, callback)
    state, fmt = read_state_dict(path)
    openai = os.fspath(weights).lower() == "openai" or (
        fmt.startswith("TorchScript") and all(k in state for k in _OPENAI_EXTRAS))
    for k in _OPENAI_EXTRAS:
        state.pop(k, None)
    state = {k: v for k, v in state.items() if not k.endswith("attn_mask")}
    if openai and not cfg.quick_gelu:
        cfg = replace(cfg, quick_gelu=True)
        reporter(callback).note(f"{path.name}: OpenAI's weights, run with QuickGELU as they were trained")
    net = CLIP(cfg)
    own = net.state_dict()
    what = f"{path}: weights of another model than {name}"
    fix = "pass the matching {clip_model} (a name or an open_clip config .json)"
    tags = {"param": "clip_weights", "label": "CLIP weights", "also": {"clip_model": "model"}}
    for k, t in own.items():
        if k in state and tuple(state[k].shape) != tuple(t.shape):
            raise StyleforgeError(f"{what} ({k} is {list(state[k].shape)}, {name} needs {list(t.shape)}); {fix}",
                                  **tags)
    missing = [k for k in own if k not in state]
    extra = [k for k in state if k not in own]
    for keys, how in ((extra, "has {}, which {} does not"), (missing, "lacks {}, which {} needs")):
        if keys:
            more = f" and {len(keys) - 1} more" if len(keys) > 1 else ""
            raise StyleforgeError(f"{what} (it {how.format(repr(keys[0]), name)}{more}); {fix}", **tags)
    for k, v in state.items():
        if not v.is_floating_point():
            raise StyleforgeError(f"{path}: {k} holds {v.dtype} values, not floats", **tags)
    net.load_state_dict({k: v.to(torch.float32) for k, v in state.items()})
    net.source = {"model": name, "weights": str(path), "format": fmt,
                  "activation": "QuickGELU" if cfg.quick_gelu else "GELU"}
    return net.to(device).eval().requires_grad_(False)
