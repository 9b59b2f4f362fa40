"""The metric names: the official twelve and the small-sample variants, each with its definition."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

from ..errors import StyleforgeError

__all__ = ["MetricSpec", "METRICS", "METRIC_NAMES", "OFFICIAL_NAMES", "check_metrics", "metric_spec"]

# The official caps on real images for the "_full" metrics (metric_main.py); the other ones use as many reals as fakes.
_FULL_MAX_REAL = {"fid": None, "kid": 1_000_000, "pr": 200_000}
_SMALL_COUNTS = (10, 5, 1)  # thousands of fakes in the small-sample variants
PPL_VARIANTS = {  # name -> (space, sampling, crop) (official: all 50k samples, epsilon 1e-4, batches of 2)
    "ppl2_wend": ("w", "end", False),
    "ppl_zfull": ("z", "full", True),
    "ppl_wfull": ("w", "full", True),
    "ppl_zend": ("z", "end", True),
    "ppl_wend": ("w", "end", True),
}


@dataclass(frozen=True)
class MetricSpec:
    """One metric: ``kind`` (fid, kid, pr, is, ppl), ``num_gen`` fakes (PPL: samples), ``max_real`` reals (None: the
    whole dataset), ``official`` (one of NVIDIA's twelve), and the kind's settings in ``params``."""

    name: str
    kind: str
    num_gen: int
    max_real: Optional[int] = None
    official: bool = False
    params: Dict[str, object] = field(default_factory=dict)

    @property
    def full(self) -> bool:
        """All reals (up to the official cap ``max_real``) rather than as many as the fakes."""
        return self.name.endswith("_full")

    @property
    def needs_reals(self) -> bool:
        return self.kind in ("fid", "kid", "pr")

    @property
    def result_keys(self) -> Tuple[str, ...]:
        if self.kind == "pr":
            return (f"{self.name}_precision", f"{self.name}_recall")
        if self.kind == "is":
            return (f"{self.name}_mean", f"{self.name}_std")
        return (self.name,)


def _build() -> Dict[str, MetricSpec]:
    specs: List[MetricSpec] = []

    def add_family(k: int, official: bool) -> None:
        n = k * 1000
        for full in (True, False):
            sfx = "_full" if full else ""
            specs.append(MetricSpec(f"fid{k}k{sfx}", "fid", n, _FULL_MAX_REAL["fid"] if full else n, official))
            specs.append(MetricSpec(f"kid{k}k{sfx}", "kid", n, _FULL_MAX_REAL["kid"] if full else n, official,
                                    dict(num_subsets=100, max_subset_size=1000)))
            specs.append(MetricSpec(f"pr{k}k3{sfx}", "pr", n, _FULL_MAX_REAL["pr"] if full else n, official,
                                    dict(nhood_size=3, row_batch_size=10000, col_batch_size=10000)))
        specs.append(MetricSpec(f"is{k}k", "is", n, None, official, dict(num_splits=10)))

    def add_ppl(k: int, official: bool) -> None:
        for base, (space, sampling, crop) in PPL_VARIANTS.items():
            name = base if official else f"{base}_{k}k"
            specs.append(MetricSpec(name, "ppl", k * 1000, None, official,
                                    dict(epsilon=1e-4, space=space, sampling=sampling, crop=crop, batch_size=2)))

    add_family(50, True)
    add_ppl(50, True)
    for k in _SMALL_COUNTS:
        add_family(k, False)
        add_ppl(k, False)
    order = ["fid50k_full", "kid50k_full", "pr50k3_full", "ppl2_wend", "is50k", "fid50k", "kid50k", "pr50k3",
             "ppl_zfull", "ppl_wfull", "ppl_zend", "ppl_wend"]  # the official list, as metric_main.py has it
    by_name = {s.name: s for s in specs}
    out = {n: by_name.pop(n) for n in order}
    out.update(by_name)
    return out


METRICS: Dict[str, MetricSpec] = _build()
METRIC_NAMES: Tuple[str, ...] = tuple(METRICS)
OFFICIAL_NAMES: Tuple[str, ...] = tuple(n for n, s in METRICS.items() if s.official)


def metric_spec(name: str) -> MetricSpec:
    """The definition of metric ``name`` (a :class:`StyleforgeError` listing the valid names otherwise)."""
    return METRICS[check_metrics([name])[0]]


def check_metrics(names: Sequence[str]) -> List[str]:
    """Normalise metric names (a string is split at commas; whitespace and case; empty entries dropped; duplicates kept once, in order);
    an unknown name raises a :class:`StyleforgeError` about the ``metrics`` setting listing the valid names."""
    if isinstance(names, str):
        names = names.split(",")
    out: List[str] = []
    for raw in names:
        name = str(raw).strip().lower()
        if not name:
            continue
        if name not in METRICS:
            raise StyleforgeError(
                f"no such metric; valid: {', '.join(METRIC_NAMES)}", param="metrics", value=name, label="metrics")
        if name not in out:
            out.append(name)
    if not out:
        raise StyleforgeError(f"no metric given; valid: {', '.join(METRIC_NAMES)}", param="metrics", label="metrics")
    return out
