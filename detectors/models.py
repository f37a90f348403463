"""Learned-model building blocks for detectors/learned.py: a smoothed Markov
chain over tool names, robust baselines, an isolation forest kept as plain
lists, and the versioned model files ``mcpsift train`` writes.

Everything a model *is* lives in JSON-serialisable values (dicts with string
keys, lists, numbers), because detector state is snapshotted as JSON by the
runners. The one exception is a fitted forest: it is a pure function of its
training vectors and seed, so detector state holds the vectors and a
:class:`Forest` is rebuilt from them when a process needs it (fitting needs
scikit-learn; scoring does not).

When these are called: the detectors call the Markov and baseline helpers
per event or per closed minute (they are written for that: no numpy, no
allocation on the common path); :func:`fit_forest` at most every
``if_refit_s`` of event time per tenant and by ``mcpsift train``;
:func:`read_model_file` once at start (``Detector.attach_models``).
"""

from __future__ import annotations

import json
import logging
import math
import os
import struct
from itertools import accumulate
from operator import sub, truediv
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence

__all__ = [
    "START",
    "END",
    "SEP",
    "new_markov",
    "learn_sequence",
    "transition_keys",
    "split_key",
    "transition_count",
    "transition_surprise",
    "sequence_surprises",
    "max_window_mean",
    "frozen_window_score",
    "sequence_score",
    "freeze",
    "record_score",
    "calibrate",
    "robust_center_scale",
    "Forest",
    "fit_forest",
    "forest_available",
    "ModelFileError",
    "model_path",
    "write_model_file",
    "read_model_file",
]

log = logging.getLogger("mcpsift.models")

#: pseudo tool names of a session's sequence (not valid MCP tool names: they hold spaces)
START = "<session start>"
END = "<session end>"

# --------------------------------------------------------------------------
# The Markov chain over tool names.
#
# A model is a dict:
#   "c": {"<previous>\x1f<next>": count}   transition counts of completed sessions
#   "s": completed sessions learned
#   "sc": [score, ...]                     recent session scores (a ring), for calibration
#   "sp": next ring position
#   "thr": calibrated threshold, or None before the first calibration
#   "cal": sessions learned at the last calibration
#   "fz", "fd", "fd0": surprises frozen at the last calibration (see freeze())
#
# Transitions are flat string keys (JSON objects need string keys, one lookup
# is cheaper than two, and a session's transitions are counted in one C call).
# p(b | a) = (c[a->b] + alpha) / (n[a] + alpha * V), n[a] the row total and V
# the number of names ever seen as a "next" (tools and END) plus one for UNK,
# the mass kept for a tool never seen; a row never seen (a tool with no
# outgoing history) is uniform. Surprise is -log p, in nats. n and V change
# slowly and are taken as of the last calibration (freeze()), so learning a
# session is one counting call and scoring a transition one lookup and one log.

#: separates the two names of a transition key
SEP = "\x1f"

try:  # counts an iterable into any dict, in C (what Counter.update uses)
    from collections import _count_elements as _count  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover - other Python implementations
    def _count(mapping: dict[str, int], iterable: Iterable[str]) -> None:
        get = mapping.get
        for item in iterable:
            mapping[item] = get(item, 0) + 1


def new_markov() -> dict[str, Any]:
    return {"c": {}, "s": 0, "sc": [], "sp": 0, "thr": None, "cal": 0, "fz": {}, "fd": {}, "fd0": 0.0}


def transition_keys(names: Sequence[str]) -> list[str]:
    return [a + SEP + b for a, b in zip(names, names[1:])]


def split_key(key: str) -> tuple[str, str]:
    prev, _, name = key.partition(SEP)
    return prev, name


def learn_sequence(model: dict[str, Any], keys: Sequence[str]) -> None:
    """Add a session's transitions (:func:`transition_keys` of START ... [END]) to the counts."""
    _count(model["c"], keys)


def transition_count(model: dict[str, Any], prev: str, name: str) -> int:
    return model["c"].get(prev + SEP + name, 0)


def freeze(model: dict[str, Any], alpha: float) -> None:
    """Take the row totals and the vocabulary from the counts, and keep every
    known transition's surprise ("fz"), each row's log denominator ("fd") and
    a never-seen row's ("fd0"): completed sessions are then scored for
    calibration with table lookups, and live transitions with one log."""
    counts: dict[str, int] = model["c"]
    totals: dict[str, int] = {}
    vocab: set[str] = set()
    prevs = []
    get = totals.get
    for key, count in counts.items():
        prev, _, nxt = key.partition(SEP)  # split_key(), inlined
        totals[prev] = get(prev, 0) + count
        vocab.add(nxt)
        prevs.append(prev)
    unk = alpha * (len(vocab) + 1)
    log = math.log
    rows = {prev: log(total + unk) for prev, total in totals.items()}
    model["fd"] = rows
    model["fd0"] = log(unk)
    model["fz"] = {
        key: round(rows[prev] - log(count + alpha), 6) for prev, (key, count) in zip(prevs, counts.items())
    }


def transition_surprise(model: dict[str, Any], key: str, alpha: float) -> float:
    """-log p of one transition: its current count over its row as of the last calibration."""
    return model["fd"].get(split_key(key)[0], model["fd0"]) - math.log(model["c"].get(key, 0) + alpha)


def sequence_surprises(model: dict[str, Any], keys: Sequence[str], alpha: float, *, frozen: bool = False) -> list[float]:
    """The surprise of each transition: with current counts, or (``frozen``)
    all as of the model's last calibration."""
    if not frozen:
        return [transition_surprise(model, k, alpha) for k in keys]
    table = model["fz"]
    out = [table.get(k) for k in keys]
    if None in out:  # transitions not seen by the last calibration
        rows, fallback, log_alpha = model["fd"], model["fd0"], math.log(alpha)
        for i, value in enumerate(out):
            if value is None:
                out[i] = rows.get(split_key(keys[i])[0], fallback) - log_alpha
    return out  # type: ignore[return-value]


def max_window_mean(surprises: Sequence[float], window: int) -> float:
    """The largest mean over windows of ``window`` consecutive values, each
    window ending at one value (shorter at the start, where fewer precede it).

    The means are those of prefix sums, ``(prefix[j + window] - prefix[j]) / window``
    and ``prefix[i] / i`` for the shorter windows at the start, so the result is
    the same float whichever order they are compared in."""
    n = len(surprises)
    if n == 0:
        return 0.0
    prefix = [0.0, *accumulate(surprises)]
    if n < window:
        return max(map(truediv, prefix[1:], range(1, n + 1)))
    # every full window (the first is prefix[window] - 0.0, the window-long start), then
    # the shorter ones at the start: dividing by window > 0 keeps the order of the sums
    best = max(map(sub, prefix[window:], prefix)) / window
    if window > 1:
        best = max(best, max(map(truediv, prefix[1:window], range(1, window))))
    return best


def frozen_window_score(model: dict[str, Any], keys: Sequence[str], alpha: float, window: int) -> float:
    """``max_window_mean(sequence_surprises(model, keys, alpha, frozen=True), window)``
    in one call: what scoring a completed session for calibration costs."""
    out = list(map(model["fz"].get, keys))
    if None in out:  # transitions not seen by the last calibration: found by index, in C
        rows, fallback, log_alpha = model["fd"], model["fd0"], math.log(alpha)
        i = out.index(None)
        while True:
            out[i] = rows.get(keys[i].partition(SEP)[0], fallback) - log_alpha
            try:
                i = out.index(None, i + 1)
            except ValueError:
                break
    return max_window_mean(out, window)  # type: ignore[arg-type]


def sequence_score(
    model: dict[str, Any], names: Sequence[str], alpha: float, window: int, *, frozen: bool = False
) -> float:
    """A session's score: the largest mean surprise over its windows of
    ``window`` transitions (the whole sequence while it is shorter)."""
    return max_window_mean(sequence_surprises(model, transition_keys(names), alpha, frozen=frozen), window)


def record_score(model: dict[str, Any], score: float, keep: int) -> None:
    """Keep ``score`` among the model's ``keep`` most recent session scores."""
    ring = model["sc"]
    score = round(score, 4)
    if len(ring) > keep:  # the ring was made smaller since: keep the newest
        del ring[: len(ring) - keep]
        model["sp"] = 0
    if len(ring) < keep:
        ring.append(score)
        model["sp"] = len(ring) % keep
        return
    ring[model["sp"] % keep] = score
    model["sp"] = (model["sp"] + 1) % keep


def calibrate(model: dict[str, Any], quantile: float, floor: float, alpha: float, margin: float = 0.0) -> Optional[float]:
    """Set the model's threshold to the ``quantile`` of its recent session
    scores plus ``margin``, but never below ``floor`` (None while it has no
    scores), and freeze its surprises for the scores to come.

    The margin matters because scores are discrete: the tail is made of a few
    rare patterns, each a point mass, and the quantile lands on one of them. A
    pattern's score creeps up as the tenant grows (its rare transition's row
    total grows faster than its count), so without a margin every later
    session with that pattern would sit just above a threshold set at its
    older value."""
    model["cal"] = model["s"]
    freeze(model, alpha)
    ring = model["sc"]
    if not ring:
        model["thr"] = None
        return None
    ordered = sorted(ring)
    # nearest rank: the smallest score with at least `quantile` of the scores at or below it
    rank = min(len(ordered) - 1, max(0, math.ceil(quantile * len(ordered)) - 1))
    model["thr"] = round(max(ordered[rank] + margin, floor), 4)
    return model["thr"]


# --------------------------------------------------------------------------
# Robust baselines.

#: 1.4826 * MAD estimates the standard deviation of normal data; 1.2533 * the
#: mean absolute deviation does too, and is not 0 when over half the values
#: are equal (the usual case for a quiet principal)
_MAD_TO_SD = 1.4826
_MEAN_AD_TO_SD = 1.2533


def robust_center_scale(values: Sequence[float], min_scale: float, poisson: bool) -> tuple[float, float]:
    """(median, scale) of ``values`` for a robust z-score ``(x - median) / scale``.

    scale = max(1.4826 * MAD, 1.2533 * mean absolute deviation from the median,
    sqrt(median) when ``poisson`` (the noise of a count of that size), ``min_scale``).
    MAD is 0 whenever more than half the values are equal (a principal that
    makes exactly one call a minute, or a feature that is mostly 0): the
    other terms keep the scale positive, so a z-score never divides by 0 and
    one stray value is not "infinitely" unusual.
    """
    ordered = sorted(values)
    n = len(ordered)
    if n == 0:
        return 0.0, min_scale
    mid = n // 2
    median = ordered[mid] if n % 2 else (ordered[mid - 1] + ordered[mid]) / 2.0
    deviations = sorted(abs(v - median) for v in ordered)
    mad = deviations[mid] if n % 2 else (deviations[mid - 1] + deviations[mid]) / 2.0
    mean_ad = sum(deviations) / n
    scale = max(_MAD_TO_SD * mad, _MEAN_AD_TO_SD * mean_ad, min_scale)
    if poisson and median > 0:
        scale = max(scale, math.sqrt(median))
    return median, scale


# --------------------------------------------------------------------------
# Isolation forest as plain lists.


def forest_available() -> bool:
    try:
        import sklearn  # noqa: F401
    except ImportError:
        return False
    return True


def _average_path_length(n: float) -> float:
    """c(n): the average path length of an unsuccessful search in a binary
    search tree of n points (Liu et al. 2008), as scikit-learn computes it."""
    if n <= 1:
        return 0.0
    if n <= 2:
        return 1.0
    return 2.0 * (math.log(n - 1.0) + 0.5772156649015329) - 2.0 * (n - 1.0) / n


_F32 = struct.Struct("f")


def _f32(x: float) -> float:
    """``x`` rounded to float32, as scikit-learn's trees compare features."""
    try:
        return _F32.unpack(_F32.pack(x))[0]
    except OverflowError:
        return math.copysign(math.inf, x)


class Forest:
    """A fitted isolation forest: per tree, the feature permutation and the
    node arrays (feature, threshold, left, right, leaf path length). Scores
    one vector in pure Python (about 100 µs for 50 trees), with the same
    value as ``IsolationForest.score_samples`` (higher = more normal, in
    [-1, 0)); the detector reports ``-score`` (0..1, higher = more anomalous)."""

    __slots__ = ("trees", "max_samples", "_norm", "training_scores")

    def __init__(self, trees: list[list[list[Any]]], max_samples: int):
        self.trees = trees
        self.max_samples = max_samples
        self._norm = _average_path_length(max_samples)
        #: :meth:`score` of each training vector, when scikit-learn computed them
        #: at fit time (vectorised: scoring thousands in pure Python takes a while)
        self.training_scores: Optional[list[float]] = None

    def path_length(self, x: Sequence[float]) -> float:
        xs = [_f32(v) for v in x]
        total = 0.0
        for features, feature, threshold, left, right, leaf_depth in self.trees:
            node = 0
            while left[node] != -1:
                node = left[node] if xs[features[feature[node]]] <= threshold[node] else right[node]
            total += leaf_depth[node]
        return total / len(self.trees)

    def score(self, x: Sequence[float]) -> float:
        """scikit-learn's ``score_samples`` of one vector."""
        if self._norm == 0.0:  # one training sample: scikit-learn's convention
            return -0.5
        return -(2.0 ** (-self.path_length(x) / self._norm))

    def to_json(self) -> dict[str, Any]:
        return {"max_samples": self.max_samples, "trees": self.trees}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Forest":
        return cls([list(t) for t in data["trees"]], int(data["max_samples"]))


def fit_forest(vectors: Sequence[Sequence[float]], n_trees: int, seed: int, max_samples: int = 256) -> Forest:
    """Fit scikit-learn's IsolationForest on ``vectors`` (deterministic in ``seed``)
    and keep its trees as lists. Raises ImportError without scikit-learn."""
    import numpy as np
    from sklearn.ensemble import IsolationForest

    X = np.asarray(vectors, dtype=float)
    model = IsolationForest(
        n_estimators=n_trees, max_samples=min(max_samples, len(X)), random_state=seed
    ).fit(X)
    # trees index the columns they were fit on: a subset only when features are subsampled
    subsampled = getattr(model, "_max_features", X.shape[1]) != X.shape[1]
    trees = []
    for estimator, features in zip(model.estimators_, model.estimators_features_):
        if not subsampled:
            features = range(X.shape[1])
        tree = estimator.tree_
        left = tree.children_left.tolist()
        depth = [0] * len(left)
        for node in range(len(left)):  # parents come before their children in sklearn's arrays
            if left[node] != -1:
                depth[left[node]] = depth[node] + 1
                depth[tree.children_right[node]] = depth[node] + 1
        samples = tree.n_node_samples.tolist()
        leaf_depth = [
            float(depth[i] + _average_path_length(samples[i])) if left[i] == -1 else 0.0 for i in range(len(left))
        ]
        trees.append(
            [
                [int(f) for f in features],
                [max(int(f), 0) for f in tree.feature.tolist()],  # leaves hold -2: never read
                [float(t) for t in tree.threshold.tolist()],
                left,
                tree.children_right.tolist(),
                leaf_depth,
            ]
        )
    forest = Forest(trees, int(model.max_samples_))
    forest.training_scores = [float(v) for v in model.score_samples(X)]
    return forest


# --------------------------------------------------------------------------
# Model files.


class ModelFileError(ValueError):
    """A model file that cannot be used; the message says why and what to do."""


def model_path(model_dir: Path | str, rule_id: str, version: int) -> Path:
    """``<model_dir>/<rule_id>.v<version>.json``."""
    return Path(model_dir) / f"{rule_id}.v{version}.json"


def write_model_file(path: Path | str, header: dict[str, Any], tenants: dict[str, Any]) -> Path:
    """Write a model file atomically (a temporary file renamed over the old one)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump({**header, "tenants": tenants}, handle, separators=(",", ":"), sort_keys=True)
    os.replace(tmp, path)
    return path


def read_model_file(path: Path | str, fmt: str) -> Optional[dict[str, Any]]:
    """The contents of a model file of format ``fmt``, or None (logged) when it
    is absent, unreadable or of another format/version. Never raises: a bad
    model file must not stop detection, which then learns online from scratch."""
    path = Path(path)
    if not path.is_file():
        stem = path.name[: path.name.rindex(".v")] if ".v" in path.name else path.stem
        others = sorted(p.name for p in path.parent.glob(stem + ".v*.json")) if path.parent.is_dir() else []
        if others:
            log.error(
                "model file %s not found, but %s exist(s) in %s: written by another mcpsift version; "
                "retrain with `mcpsift train` (learning online from scratch until then)",
                path.name, ", ".join(others), path.parent,
            )
        return None
    try:
        with open(path, "r", encoding="utf-8") as handle:
            data = json.load(handle)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        log.error("model file %s cannot be read (%s); ignoring it, learning online from scratch", path, exc)
        return None
    if not isinstance(data, dict) or data.get("format") != fmt or not isinstance(data.get("tenants"), dict):
        found = data.get("format") if isinstance(data, dict) else type(data).__name__
        log.error(
            "model file %s has format %r, this mcpsift reads %r; ignoring it (retrain with `mcpsift train`)",
            path, found, fmt,
        )
        return None
    return data

