"""``evaluate``: several generators against one real set: a table (printed, results.json, results.csv), a bar plot
(results.png) and an index.html showing both.

The detectors are loaded once and the real images' statistics computed once (the library caches them; every
generator after the first reads them back), then each generator is loaded, measured with every metric and
released. The report writers below take plain data and do not use click.
"""

from __future__ import annotations

import csv
import html
import io
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Sequence, Tuple

import click

from .calc_metrics import load_detectors, metric_flags, metric_options, split_metrics
from .options import Command, command, user_errors

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")
PLOT_NAME = "results.png"


class GreedyCommand(Command):
    """A command whose ``--generators`` takes every value up to the next flag (``--generators a=x b=y``), as
    well as the repeated form (``--generators a=x --generators b=y``)."""

    greedy = ("--generators",)

    def parse_args(self, ctx, args):
        out, i = [], 0
        while i < len(args):
            a = args[i]
            if a == "--":
                out += args[i:]
                break
            if a in self.greedy:
                j = i + 1
                while j < len(args) and not args[j].startswith("-"):
                    out += [a, args[j]]
                    j += 1
                if j == i + 1:
                    out.append(a)  # no value: click reports it
                i = j
                continue
            out.append(a)
            i += 1
        return super().parse_args(ctx, out)


def parse_generators(values: Sequence[str]) -> List[Tuple[str, str]]:
    """``["dcgan=runs/G.safetensors", "stylegan=faces32"]`` -> [(name, spec)], names unique."""
    from ..errors import StyleforgeError

    out: List[Tuple[str, str]] = []
    for v in values:
        name, sep, spec = str(v).partition("=")
        name, spec = name.strip(), spec.strip()
        if not sep or not name or not spec:
            raise StyleforgeError(f"{v!r} is not NAME=NETWORK; write e.g. {{name}} mine=runs/00000-x/"
                                  "network-snapshot-000200.safetensors faces32=faces32", param="generators")
        if not NAME.match(name):
            raise StyleforgeError(f"name {name!r} (in {v!r}): use letters, digits and _ . + - (it names a table "
                                  "row and a bar)", param="generators")
        if any(name == n for n, _ in out):
            raise StyleforgeError(f"the name {name!r} is given twice; every generator needs its own name",
                                  param="generators")
        out.append((name, spec))
    if not out:
        raise StyleforgeError("give at least one NAME=NETWORK", param="generators")
    return out


@dataclass
class Evaluation:
    """The results of one ``evaluate`` run, as plain data (what results.json holds)."""

    data: str
    metrics: List[str]
    settings: Dict[str, Any]
    generators: List[Dict[str, Any]] = field(default_factory=list)  # name, network, file, results, records

    @property
    def columns(self) -> List[str]:
        """Every result key (``fid5k``, ``pr5k3_precision``...), in the order the metrics gave them."""
        cols: List[str] = []
        for g in self.generators:
            cols += [k for k in g["results"] if k not in cols]
        return cols

    def to_dict(self) -> Dict[str, Any]:
        return {"data": self.data, "metrics": self.metrics, "settings": self.settings,
                "columns": self.columns, "generators": self.generators}


def table_text(ev: Evaluation) -> str:
    """The results as an aligned text table (4 significant digits; the files keep every digit)."""
    cols = ev.columns
    rows = [["generator"] + cols] + [[g["name"]] + [_fmt(g["results"].get(c)) for c in cols] for g in ev.generators]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
                     for r in rows)


def _fmt(v) -> str:
    return "" if v is None else f"{v:.4g}"


def csv_text(ev: Evaluation) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["generator", "network"] + ev.columns)
    for g in ev.generators:
        w.writerow([g["name"], g["network"]] + [repr(g["results"][c]) if c in g["results"] else ""
                                                 for c in ev.columns])
    return buf.getvalue()


def plot_png(ev: Evaluation, path: Path) -> Path:
    """A bar chart: one panel per result key, one bar per generator (matplotlib when installed, else PIL)."""
    from ..utils.fileio import atomic_path

    with atomic_path(path) as tmp:
        try:
            _plot_matplotlib(ev, tmp)
        except (ImportError, AttributeError):  # not installed, or older than 3.5 (colormaps, bar_label)
            _plot_pil(ev, tmp)
    return path


def _plot_matplotlib(ev: Evaluation, out: Path) -> None:
    import matplotlib
    from matplotlib.figure import Figure  # no pyplot: no global state, no GUI backend

    cols, names = ev.columns, [g["name"] for g in ev.generators]
    fig = Figure(figsize=(max(2.2 + 0.5 * len(names), 3.0) * len(cols), 3.4), dpi=100)
    colors = matplotlib.colormaps["tab10"]
    for i, c in enumerate(cols):
        ax = fig.add_subplot(1, len(cols), i + 1)
        vals = [g["results"].get(c, float("nan")) for g in ev.generators]
        bars = ax.bar(range(len(names)), vals, color=[colors(k % 10) for k in range(len(names))])
        ax.bar_label(bars, labels=[_fmt(v) for v in vals], fontsize=8)
        ax.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=8)
        ax.set_title(c, fontsize=10)
        ax.margins(y=0.15)
    fig.tight_layout()
    fig.savefig(out, format="png")


def _plot_pil(ev: Evaluation, out: Path) -> None:
    import math

    from PIL import Image, ImageDraw

    cols, names = ev.columns, [g["name"] for g in ev.generators]
    bar_w, gap, h, top, bottom = 28, 12, 220, 30, 40
    panel_w = max(len(names) * (bar_w + gap) + gap, 140)
    img = Image.new("RGB", (panel_w * len(cols), h + top + bottom), "white")
    d = ImageDraw.Draw(img)
    palette = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75)]
    for i, c in enumerate(cols):
        x0 = i * panel_w
        vals = [g["results"].get(c, float("nan")) for g in ev.generators]
        finite = [abs(v) for v in vals if math.isfinite(v)]
        scale = max(finite) if finite and max(finite) > 0 else 1.0
        d.text((x0 + gap, 8), c, fill="black")
        d.line([(x0 + gap // 2, top + h), (x0 + panel_w - gap // 2, top + h)], fill="black")
        for k, (n, v) in enumerate(zip(names, vals)):
            bx = x0 + gap + k * (bar_w + gap)
            bh = int(round(h * abs(v) / scale)) if math.isfinite(v) else 0
            d.rectangle([bx, top + h - bh, bx + bar_w, top + h], fill=palette[k % len(palette)])
            d.text((bx, top + h - bh - 12), _fmt(v), fill="black")
            d.text((bx, top + h + 6), n[:8], fill="black")
    img.save(out, format="PNG")


def index_html(ev: Evaluation) -> str:
    e = html.escape
    cols = ev.columns
    head = "".join(f"<th>{e(c)}</th>" for c in ["generator", "network"] + cols)
    rows = "".join(
        "<tr><td>{}</td><td><code>{}</code></td>{}</tr>".format(
            e(g["name"]), e(g["network"]), "".join(f"<td>{e(_fmt(g['results'].get(c)))}</td>" for c in cols))
        for g in ev.generators)
    s = ev.settings
    return (f"<!doctype html>\n<html><head><meta charset='utf-8'><title>evaluation: {e(', '.join(ev.metrics))}"
            "</title>\n<style>body{font-family:sans-serif;margin:2em} table{border-collapse:collapse} "
            "td,th{border:1px solid #ccc;padding:4px 10px;text-align:right} td:first-child,th:first-child,"
            "td:nth-child(2){text-align:left}</style></head>\n<body>\n"
            f"<h1>{e(', '.join(ev.metrics))}</h1>\n<p>Real images: <code>{e(ev.data)}</code>; resize "
            f"{e(str(s.get('resize')))}, seed {e(str(s.get('seed')))}, truncation {e(str(s.get('truncation_psi')))}"
            "; lower is better for FID, KID and PPL, higher for IS, precision and recall.</p>\n"
            f"<table><tr>{head}</tr>{rows}</table>\n<p><img src='{PLOT_NAME}' alt='bar plot of the results'></p>\n"
            "<p>All digits: results.csv and results.json (with each metric's full record).</p>\n</body></html>\n")


def write_report(ev: Evaluation, outdir: Path) -> Dict[str, Path]:
    """results.json, results.csv, results.png and index.html in ``outdir`` (each written atomically)."""
    from ..utils.fileio import atomic_path, ensure_outdir, save_json

    ensure_outdir(outdir, param="outdir")
    out = {"json": save_json(outdir / "results.json", ev.to_dict())}
    for key, name, text in (("csv", "results.csv", csv_text(ev)), ("html", "index.html", index_html(ev))):
        with atomic_path(outdir / name) as tmp:
            tmp.write_text(text)
        out[key] = outdir / name
    out["plot"] = plot_png(ev, outdir / PLOT_NAME)
    return out


def check_generators(pairs: Sequence[Tuple[str, str]], files: Sequence[Path], data) -> None:
    """Before any measuring: every generator makes images of the real images' size and channel count (each is
    loaded and released; a mismatch found after the first generator's metrics would waste them)."""
    from .. import zoo
    from ..data.dataset import open_dataset
    from ..errors import StyleforgeError

    probe = open_dataset(data, cond=False)
    try:
        res, ch = probe.resolution, probe.num_channels
    finally:
        probe.close()
    kind = {1: "grayscale", 3: "RGB"}
    for (name, _), path in zip(pairs, files):
        G, _ = zoo.load_generator(path, "cpu")
        if (G.img_resolution, G.img_channels) != (res, ch):
            raise StyleforgeError(
                f"{name} ({Path(path).name}) makes {G.img_resolution}x{G.img_resolution} "
                f"{kind.get(G.img_channels, f'{G.img_channels}-channel')} images, but {data} holds {res}x{res} "
                f"{kind.get(ch, f'{ch}-channel')} images; compare generators of the real images' size",
                param="generators")
        del G


@command(cls=GreedyCommand)
@click.option("--generators", "generators", multiple=True, required=True, metavar="NAME=NETWORK ...",
              help="The generators: NAME=NETWORK each (any network the tools read: .pkl, .safetensors, a bundled "
                   "or known name, a URL); several after one flag or the flag repeated.")
@click.option("--data", type=click.Path(), required=True, metavar="PATH", help="Real images (dataset zip or folder).")
@click.option("--metrics", "metrics", default="fid5k,kid5k", show_default=True, metavar="LIST",
              help="Comma-separated metric names (fid50k_full, kid50k_full, pr50k3_full, is50k, ppl2_wend, fid5k...).")
@metric_flags
@click.option("--outdir", type=click.Path(file_okay=False), required=True,
              help="Write results.json, results.csv, results.png and index.html here.")
@user_errors
def evaluate_cmd(generators, data, metrics, resize, inception, vgg16, allow_download, device, seed, batch,
                 truncation_psi, outdir):
    """Evaluate several generators against one set of real images: a table, JSON, CSV, a bar plot, index.html.

    \b
    Examples:
      evaluate.py --generators mine=runs/00000-x/network-snapshot-000200.safetensors faces32=faces32 \\
                  --data faces/ --metrics fid5k,kid5k --outdir out/eval
      evaluate.py --generators a=a.pkl --generators b=b.pkl --data ffhq.zip --metrics fid50k_full --outdir out/ab
    """
    from .. import zoo
    from ..metrics import calc_metric
    from ..utils.perf import tune_cpu_allocator
    from ..utils.runtime import check_outdir
    from .progress import cli_callback

    pairs = parse_generators(generators)
    names = split_metrics(metrics)
    check_outdir(outdir)
    if not Path(data).exists():
        from ..errors import StyleforgeError

        raise StyleforgeError(f"{data}: no such file or folder; give the real images (a dataset zip or folder)",
                              param="data")
    callback = cli_callback()
    options = metric_options(resize, inception, vgg16, allow_download, device, seed, batch, truncation_psi)
    if options.device.type == "cpu":
        tune_cpu_allocator()
    files = [zoo.resolve(spec, allow_download, callback) for _, spec in pairs]  # every file found before any work
    check_generators(pairs, files, data)
    detectors = load_detectors(names, options, callback)
    ev = Evaluation(data=str(data), metrics=names, settings={
        "resize": resize, "seed": seed, "truncation_psi": truncation_psi, "batch": batch,
        "inception": inception, "vgg16": vgg16})
    # the real images' statistics are computed by the first generator's metrics, cached, and read back for the others
    reals = str(data)
    for (name, spec), path in zip(pairs, files):
        G, _ = zoo.load_generator(path, options.device, allow_download, callback)
        entry: Dict[str, Any] = {"name": name, "network": spec, "file": str(path), "results": {}, "records": []}
        for metric in names:
            res = calc_metric(metric, G, reals, options=options, detectors=detectors, callback=callback,
                              snapshot=Path(path).name)
            entry["results"].update(res.results)
            entry["records"].append(res.as_json())
            click.echo(f"{name}: " + ", ".join(f"{k} {v:.6g}" for k, v in res.results.items()), err=True)
        ev.generators.append(entry)
        del G
    written = write_report(ev, Path(outdir))
    click.echo(table_text(ev))
    click.echo(f"results: {written['json']}, {written['csv'].name}, {written['plot'].name}, {written['html'].name}")
