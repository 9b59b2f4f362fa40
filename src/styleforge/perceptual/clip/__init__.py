"""CLIP in plain torch: no torchvision, no open_clip, no code from weight files.

- :mod:`.model`: :class:`CLIP` (ViT image tower, causal text transformer, open_clip's parameter names),
  :class:`CLIPConfig`, the known model configs;
- :mod:`.tokenizer`: CLIP's BPE tokenizer (vocabulary shipped with the package);
- :mod:`.preprocess`: CLIP's exact image preprocessing (Pillow) and a differentiable one (torch);
- :mod:`.weights`: open_clip safetensors / torch archives and OpenAI's TorchScript ``.pt`` read as tensors only;
- :mod:`.load`: :func:`load_clip` (model name or config JSON + weights file or tag, through the cache).

    from styleforge.perceptual.clip import load_clip
    clip = load_clip("ViT-B-32", "openai")                # QuickGELU, as OpenAI's weights need
    text = clip.encode_prompts("a person with sunglasses")  # [1, 512], unit length
    img = clip.encode_pixels(G_output)                    # differentiable, generator range [-1, 1]
"""

from .load import WEIGHT_TAGS, load_clip, resolve_config, resolve_weights
from .model import CLIP, MODEL_CONFIGS, CLIPConfig
from .preprocess import OPENAI_MEAN, OPENAI_STD, preprocess_image, preprocess_tensor, resize_crop
from .tokenizer import Tokenizer
from .weights import WeightsFormatError, read_state_dict

__all__ = ["CLIP", "CLIPConfig", "MODEL_CONFIGS", "WEIGHT_TAGS", "load_clip", "resolve_config", "resolve_weights",
           "OPENAI_MEAN", "OPENAI_STD", "preprocess_image", "preprocess_tensor", "resize_crop", "Tokenizer",
           "WeightsFormatError", "read_state_dict"]
