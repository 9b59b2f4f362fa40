"""``clip-generate``: generate or edit images toward a text prompt with CLIP (StyleCLIP's W+ optimisation)."""

from __future__ import annotations

from pathlib import Path

import click

from .options import IntListParam, command, device_option, user_errors

clip_model_option = click.option(
    "--clip-model", "clip_model", default="ViT-B-32", show_default=True, metavar="NAME|CONFIG.json",
    help="CLIP model: ViT-B-32, ViT-B-32-quickgelu, or an open_clip model-config .json.")
clip_weights_option = click.option(
    "--clip-weights", "clip_weights", default="openai", show_default=True, metavar="PATH|openai",
    help="CLIP weights: a local file (open_clip safetensors/.bin, OpenAI's .pt) or a tag found in the cache "
         "(openai: ViT-B-32.pt, downloaded only with --allow-download).")


def check_prompt(text, param: str = "prompt") -> str:
    from ..errors import StyleforgeError

    if text is None or not str(text).strip():
        raise StyleforgeError('is empty; describe the image in words, e.g. "a smiling face"', param=param,
                              value=repr(text or ""))
    return str(text)


def clip_weights_first(clip_model: str, clip_weights: str, allow_download, callback=None) -> str:
    """Before torch is imported: a weights tag of a known model (``openai``) resolved through the cache, so that a
    missing file is reported at once (and a permitted download happens here); anything else is passed on."""
    from ..utils.cache import KNOWN_FILES, clip_weights_name, resolve_file

    if Path(clip_weights).expanduser().is_file():
        return clip_weights
    name = clip_weights_name(clip_model, clip_weights)
    if name in KNOWN_FILES:
        resolve_file(name, allow_download, what="CLIP weights", callback=callback)
    return clip_weights


@command()
@click.option("--network", "network", metavar="PATH|NAME|URL",
              help="Network: official .pkl, styleforge .safetensors, known name (ffhq...) or URL. Default: bundled model.")
@click.option("--prompt", required=True, help='What the image should show, e.g. "a blond kid with green eyes".')
@click.option("--seeds", "--seed", "seeds", type=IntListParam("seeds"), default=None,
              help="Start from these seeds' latents (with --trunc). Default: the mean latent.")
@click.option("--trunc", "truncation_psi", type=float, default=0.7, show_default=True, help="Truncation psi (seeds).")
@click.option("--class", "class_idx", type=int, default=None, help="Class label (seeds of conditional networks).")
@click.option("--w", "--projected-w", "w_file", type=click.Path(dir_okay=False), default=None, metavar="FILE.npz",
              help="Start from these latents ('w' [N, num_ws, w_dim], e.g. projected_w.npz): edit mode.")
@click.option("--mode", type=click.Choice(["generate", "edit"]), default=None,
              help="generate: CLIP loss only; edit: + lambda * |w - w0|^2 (+ identity). Default: edit with --w.")
@click.option("--steps", "num_steps", type=click.IntRange(min=1), default=300, show_default=True)
@click.option("--lambda", "l2_lambda", type=click.FloatRange(min=0), default=0.008, show_default=True,
              help="Weight of |w - w0|^2 in edit mode (larger: closer to the start).")
@click.option("--lr", "initial_learning_rate", type=click.FloatRange(min=0, min_open=True), default=0.1,
              show_default=True, help="Peak learning rate (ramped up over 5 %, cosine down over the last 25 %).")
@click.option("--identity", type=click.Choice(["vgg", "discriminator"]), default=None,
              help="Edit mode: also keep the features of the start image (vgg: vgg16.pt LPIPS; discriminator: "
                   "the network's D). A face-recognition FeatureNet can be passed from Python.")
@click.option("--identity-lambda", "identity_lambda", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Weight of the identity term (required with --identity).")
@clip_model_option
@clip_weights_option
@click.option("--outdir", type=click.Path(file_okay=False), required=True, help="Where to save the outputs.")
@click.option("--frame-every", "frame_every", type=click.IntRange(min=1), default=20, show_default=True,
              help="Save a frame every k steps (frames/, and the video).")
@click.option("--gif", "video", flag_value="gif", default=True, help="Write the optimisation as GIFs (default).")
@click.option("--mp4", "video", flag_value="mp4", help="Write MP4s instead (needs imageio-ffmpeg).")
@click.option("--no-video", "video", flag_value="none", help="No video.")
@click.option("--fps", type=click.FloatRange(min=0, min_open=True), default=10, show_default=True)
@device_option
@click.option("--allow-download", is_flag=True, default=None, help="Allow downloading --network / CLIP weights if not cached.")
@user_errors
def clip_generate_cmd(network, prompt, seeds, truncation_psi, class_idx, w_file, mode, num_steps, l2_lambda,
                      initial_learning_rate, identity, identity_lambda, clip_model, clip_weights, outdir, frame_every,
                      video, fps, device, allow_download):
    """Generate (from the mean latent or seeds) or edit (--w) images toward a text prompt with CLIP.

    \b
    Outputs in --outdir, per start latent k: clip{k:02d}.png (final), frames/clip{k:02d}-{step:04d}.png,
    clip{k:02d}.gif (or .mp4); and clip_w.npz ('w' final, 'w0' start; render it with generate.py --projected-w,
    edit it with edit.py --w), clip.json (settings, similarity to the prompt per step).
    \b
    Examples:
      clip_generate.py --network ffhq.pkl --prompt "a blond kid with green eyes" --outdir out/kid
      clip_generate.py --network ffhq.pkl --w carol/projected_w.npz --prompt "a person with sunglasses" --outdir out/c
    """
    from ..errors import StyleforgeError
    from ..utils.runtime import check_outdir
    from .progress import cli_callback

    check_prompt(prompt)
    check_outdir(outdir)
    if w_file is not None and seeds is not None:
        raise StyleforgeError("give --w or --seeds, not both")
    if identity and identity_lambda is None:
        raise StyleforgeError("--identity needs --identity-lambda (e.g. 0.1); it weighs the identity term")
    callback = cli_callback()
    clip_weights = clip_weights_first(clip_model, clip_weights, allow_download, callback)

    from ..textguide.run import clip_generate

    res = clip_generate(
        outdir, prompt, network=network, seeds=seeds, truncation_psi=truncation_psi, class_idx=class_idx,
        w_file=w_file, mode=mode, num_steps=num_steps, l2_lambda=l2_lambda,
        initial_learning_rate=initial_learning_rate, identity=identity, identity_lambda=identity_lambda,
        clip_model=clip_model, clip_weights=clip_weights, frame_every=frame_every, video=video, fps=fps,
        device=device, allow_download=allow_download, callback=callback,
    )
    click.echo(res)
