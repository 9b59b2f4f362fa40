"""``learn_direction``: a direction from labelled latents or photos (linear SVM, InterFaceGAN's method).

Folders of photos are aligned and projected first (with the align and project tools, into ``--workdir``); that
composition lives here, in the command layer, so the directions library does not depend on align/ or project/.
"""

from __future__ import annotations

from pathlib import Path

import click

from .edit import allow_download_option, check_out_file, load_generator_for, network_option
from .options import command, device_option, user_errors
from .progress import cli_callback


def _folder_kind(folder: str) -> str:
    """``latents`` (it holds .npz files), ``photos`` (image files) or an error."""
    from ..errors import StyleforgeError

    p = Path(folder)
    if not p.is_dir():
        raise StyleforgeError(f"{p}: no such folder")
    files = [f for f in p.rglob("*") if f.is_file() and not f.name.startswith(".")]
    if any(f.suffix.lower() == ".npz" for f in files):
        return "latents"
    if any(f.suffix.lower() in (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff") for f in files):
        return "photos"
    raise StyleforgeError(f"{p}: holds neither latents (.npz, e.g. projected_w.npz) nor photos")


def _project_photos(folder, side, workdir, network, space, num_steps, loss, align, device, allow_download, res):
    """Align (unless ``align`` is off) and project the photos of ``folder`` into ``workdir/side``; the projected
    latents' folder. Finished photos are skipped on a rerun (both tools resume)."""
    from ..align.batch import align_images
    from ..errors import StyleforgeError
    from ..project.batch import project_files

    base = Path(workdir) / side
    targets = Path(folder)
    if align:
        click.echo(f"{side}: aligning the photos of {folder} into {base / 'aligned'}", err=True)
        align_images(folder, base / "aligned", size=max(res, 8), callback=cli_callback())
        targets = base / "aligned"
    click.echo(f"{side}: projecting into {base / 'projected'}", err=True)
    r = project_files(target=targets, outdir=base / "projected", network=network, space=space, num_steps=num_steps,
                      loss=loss, save_video=False, device=device, allow_download=allow_download,
                      callback=cli_callback())
    if r.failed:
        raise StyleforgeError(f"{len(r.failed)} {side} photo(s) could not be projected (listed above); remove them "
                              "from the folder or fix them")
    return base / "projected"


@command()
@network_option
@click.option("--positive", type=click.Path(), default=None, metavar="DIR",
              help="Folder of latents (.npz, e.g. projected_w.npz) or photos WITH the attribute.")
@click.option("--negative", type=click.Path(), default=None, metavar="DIR",
              help="Folder of latents or photos WITHOUT it.")
@click.option("--latents", "latents", type=click.Path(dir_okay=False), default=None, metavar="FILE.npz",
              help="Or: latents ('w' [N, num_ws, w_dim]) to split by --scores or --score-fn.")
@click.option("--scores", type=click.Path(dir_okay=False), default=None, metavar="FILE",
              help="One score per latent of --latents (.npy, or text with one number per line).")
@click.option("--samples", type=click.IntRange(min=1), default=None,
              help="Or: score this many random samples (seeds --seed, --seed+1, ...) with --score-fn.")
@click.option("--score-fn", "score_fn", default=None, metavar="MODULE:FN|FILE.py[:FN]",
              help="Your scoring function: images [B, H, W, C] uint8 -> B numbers (higher = more of it).")
@click.option("--chosen", type=float, default=None,
              help="Scored latents: how many highest / lowest to use, a count or a ratio <= 0.5 "
                   "(default: 2%%, at least 20 a side).")
@click.option("--space", type=click.Choice(["w", "w+"]), default=None,
              help="Train on W or flattened W+ (default: w when every latent has the same w in all layers).")
@click.option("--val-fraction", "val_fraction", type=click.FloatRange(0, 1, max_open=True), default=0.3,
              show_default=True, help="Held out per side to measure the accuracy.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True,
              help="Seed of the train/validation split (and first seed of --samples).")
@click.option("--trunc", "truncation_psi", type=float, default=1.0, show_default=True, help="Truncation of --samples.")
@click.option("--out", "out", type=click.Path(dir_okay=False), required=True, help="Direction file to write (.npz).")
@click.option("--name", default=None, help="The direction's name (default: the --out file's stem).")
@click.option("--workdir", type=click.Path(file_okay=False), default=None,
              help="Photos: where aligned photos and projections go (default: <out>_work next to --out).")
@click.option("--no-align", "no_align", is_flag=True, help="Photos are aligned already: project them as they are.")
@click.option("--num-steps", type=click.IntRange(min=1), default=1000, show_default=True,
              help="Photos: projection steps.")
@click.option("--loss", type=click.Choice(["vgg", "discriminator", "pixel"]), default=None,
              help="Photos: projection loss (default as project.py).")
@click.option("--batch-size", type=click.IntRange(min=1), default=8, show_default=True,
              help="Images per forward pass when scoring.")
@device_option
@allow_download_option
@user_errors
def learn_direction_cmd(network, positive, negative, latents, scores, samples, score_fn, chosen, space, val_fraction,
                        seed, truncation_psi, out, name, workdir, no_align, num_steps, loss, batch_size, device,
                        allow_download):
    """Learn a direction with a linear SVM; report its held-out accuracy; save it as .npz.

    \b
    Inputs (one of):
      --positive DIR --negative DIR      folders of projected_w.npz, or of photos (aligned + projected first)
      --latents ws.npz --scores s.npy    latents and a score each: the top and bottom --chosen are the sides
      --latents ws.npz --score-fn F      the same, scored by your function on their images
      --samples 5000 --score-fn F        random samples of the network, scored by your function
    \b
    Examples:
      learn_direction.py --network ffhq.pkl --positive sunglasses/ --negative no_sunglasses/ --out sunglasses.npz
      learn_direction.py --network ffhq.pkl --samples 2000 --score-fn smile.py:score --out smile.npz
    """
    import numpy as np

    from ..directions import save_directions
    from ..directions.svm import (learn_direction, load_latent_folder, load_scoring_function, require_sklearn,
                                  sample_and_score, score_latents, split_by_score)
    from ..errors import StyleforgeError
    from ..latents import load_ws
    from ..utils.fileio import ensure_outdir

    folders = positive is not None or negative is not None
    scored = latents is not None or samples is not None
    if folders == scored:
        raise StyleforgeError("give --positive and --negative folders, or --latents / --samples with scores"
                              if not folders else "give either --positive/--negative or --latents/--samples, not both")
    if folders and (positive is None or negative is None):
        raise StyleforgeError("give both --positive and --negative")
    if latents is not None and samples is not None:
        raise StyleforgeError("give either --latents or --samples, not both")
    if scored and (scores is None) == (score_fn is None):
        raise StyleforgeError("give --scores or --score-fn (one of them) to rank the latents"
                              if scores is None else "give either --scores or --score-fn, not both")
    if samples is not None and score_fn is None:
        raise StyleforgeError("--samples needs --score-fn to score them")
    out_path = Path(out)
    check_out_file(out_path)
    require_sklearn()
    fn = load_scoring_function(score_fn) if score_fn else None
    G, net_path = load_generator_for(network, device, allow_download)
    info = {"network": str(net_path)}
    if folders:
        kinds = {side: _folder_kind(f) for side, f in (("positive", positive), ("negative", negative))}
        sets = {}
        for side, folder in (("positive", positive), ("negative", negative)):
            if kinds[side] == "photos":
                wd = workdir or str(out_path.with_name(out_path.stem + "_work"))
                folder = _project_photos(folder, side, wd, network, space or "w", num_steps, loss, not no_align,
                                         device, allow_download, G.img_resolution)
            sets[side], _ = load_latent_folder(folder, G.num_ws, G.w_dim, param=side)
        pos, neg = sets["positive"], sets["negative"]
        info["source"] = {"positive": str(positive), "negative": str(negative)}
    else:
        if latents is not None:
            ws = load_ws(latents, G.num_ws, G.w_dim)
            info["source"] = {"latents": str(latents)}
        if scores is not None:
            try:
                s = np.load(scores, allow_pickle=False) if scores.lower().endswith(".npy") else np.loadtxt(scores)
            except Exception as e:
                raise StyleforgeError(f"{scores}: not readable as numbers ({type(e).__name__}); save one score per "
                                      "latent as .npy or one per line") from None
            info["source"]["scores"] = str(scores)
        elif samples is not None:
            ws, s = sample_and_score(G, samples, fn, seed, truncation_psi, batch_size=batch_size,
                                     callback=cli_callback())
            info["source"] = {"samples": samples, "first_seed": seed, "truncation_psi": truncation_psi,
                              "score_fn": score_fn}
        else:
            s = score_latents(G, ws, fn, batch_size, cli_callback())
            info["source"]["score_fn"] = score_fn
        pos, neg = split_by_score(ws, s, chosen)
    res = learn_direction(pos, neg, space=space, val_fraction=val_fraction, seed=seed,
                          name=name or out_path.stem)
    ensure_outdir(out_path.parent)
    save_directions(out_path, [res.direction], **info)
    click.echo(f"{res.summary()}; wrote {out}")
