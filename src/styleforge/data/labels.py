"""Dataset labels: ``dataset.json`` (the official file) and class subfolders.

``dataset.json`` holds ``{"labels": [[name, label], ...]}``, each label an int class or a list of floats (all of
one kind and length), or ``{"labels": null}``. Without it, images in first-level subfolders (``cat/001.png``,
``dog/002.png``) can take their folder's index in sorted order as their class.
"""

from __future__ import annotations

import json
from typing import Dict, List, Optional, Sequence, Tuple

from ..errors import StyleforgeError
from .files import DATASET_JSON, Files, short_reason


def read_labels_json(files: Files) -> Optional[Dict[str, object]]:
    """``dataset.json`` labels as {name: int | list of float}; None when absent or ``{"labels": null}``."""
    if not files.exists(DATASET_JSON):
        return None
    where = files.display(DATASET_JSON)
    try:
        data = json.loads(files.read(DATASET_JSON).decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise StyleforgeError(f"{where}: not valid JSON ({short_reason(e)}); fix or delete it") from None
    if not isinstance(data, dict) or "labels" not in data:
        raise StyleforgeError(f'{where}: expected {{"labels": [[name, label], ...]}} or {{"labels": null}}; fix or delete it')
    labels = data["labels"]
    if labels is None:
        return None
    if not isinstance(labels, list):
        raise StyleforgeError(f'{where}: "labels" must be a list of [name, label] pairs or null; fix or delete it')
    out: Dict[str, object] = {}
    kind = None
    for item in labels:
        if not (isinstance(item, (list, tuple)) and len(item) == 2 and isinstance(item[0], str)):
            raise StyleforgeError(f"{where}: label entry {item!r} is not a [name, label] pair; fix or delete it")
        name, value = item
        if isinstance(value, bool) or not isinstance(value, (int, list)):
            raise StyleforgeError(f"{where}: label of {name!r} must be an int class or a list of numbers; fix it")
        if isinstance(value, int) and value < 0:
            raise StyleforgeError(f"{where}: label of {name!r} is negative ({value}); class labels start at 0")
        if isinstance(value, list):
            if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
                raise StyleforgeError(f"{where}: label of {name!r} must be a list of numbers; fix it")
            this_kind = ("vector", len(value))
        else:
            this_kind = ("class", 0)
        if kind is None:
            kind = this_kind
        elif kind != this_kind:
            raise StyleforgeError(f"{where}: labels mix classes and vectors (or vector lengths); make them uniform")
        key = name.replace("\\", "/")
        while key.startswith("./"):
            key = key[2:]
        out[key] = value
    return out


def folder_classes(names: Sequence[str], min_classes: int) -> Optional[Tuple[List[str], Dict[str, int]]]:
    """ImageFolder-style classes if every name is ``<class>/<file>``: (sorted class names, {name: index})."""
    parts = [n.split("/") for n in names]
    if not parts or any(len(p) != 2 for p in parts):
        return None
    classes = sorted({p[0] for p in parts})
    if len(classes) < min_classes:
        return None
    index = {c: i for i, c in enumerate(classes)}
    return classes, {n: index[p[0]] for n, p in zip(names, parts)}
