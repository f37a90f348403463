"""Learned-model detections (spec/detections.md, "Tools"):
``tool.unusual_sequence`` (a Markov chain over tool names) and
``volume.anomaly`` (per-principal robust baselines and an isolation forest).

Both keep one state per tenant (``key_kind = "tenant"``): the models are the
tenant's, and they learn online from its events, so the state *is* the model
and is snapshotted and restored with the rest of detector state. ``mcpsift
train`` runs the same detectors over stored history and writes the state as
model files (:func:`train_models`); at start, :meth:`attach_models` loads them
and a tenant's state is seeded from its file model on its first event.

Per-event work is O(1) amortised: on the common path a tool call costs a few
dict lookups in each detector (no log); sessions are learned when they end, calibration
re-sorts a bounded list every ``recalibrate_every`` sessions, baselines are
recomputed every ``restat_every`` active minutes of a principal, and the
forest is refit at most every ``if_refit_s`` of event time and only scores
principal-minutes whose robust z already looks unusual.
"""

from __future__ import annotations

import copy
import datetime as _dt
import logging
import math
import sys
from pathlib import Path
from typing import Any, Callable, Iterable, Optional

from pydantic import Field

from mcpsift.alerts import Alert, make_alert_id

from . import models as M
from .base import NO_ALERTS, Detector, Params
from .timing import event_ts

__all__ = [
    "DETECTORS",
    "UnusualSequence",
    "VolumeAnomaly",
    "MARKOV_FORMAT",
    "VOLUME_FORMAT",
    "MODEL_VERSION",
    "train_models",
    "train_from_store",
    "TrainReport",
]

log = logging.getLogger("mcpsift.learned")

#: model file formats (the ``format`` field of the files) and their version in the file name
MODEL_VERSION = 1
MARKOV_FORMAT = "mcpsift.markov/1"
VOLUME_FORMAT = "mcpsift.volume/1"

_UTC = _dt.timezone.utc
_SEP = M.SEP


def _score01(value: float, threshold: float) -> float:
    """A 0..1 alert score: 0.63 at the threshold, towards 1 beyond it."""
    if threshold <= 0:
        return 1.0
    return round(1.0 - math.exp(-value / threshold), 4)


# ==========================================================================
# tool.unusual_sequence


class UnusualSequenceParams(Params):
    #: transitions per scoring window (the mean surprise of the rarest window is the score)
    window: int = Field(default=3, ge=1, le=32)
    #: completed sessions a model needs before it may alert
    min_sessions: int = Field(default=500, ge=1)
    #: quantile of recent normal session scores the threshold is set at
    quantile: float = Field(default=0.995, gt=0.5, lt=1.0)
    #: added to the quantile, in nats per transition: scores are discrete, and the
    #: pattern the quantile lands on must not alert on its next occurrence
    margin: float = Field(default=0.1, ge=0.0)
    #: floor of the threshold, in nats per transition (mean surprise): a very
    #: regular tenant, whose scores are all tiny, does not alert on noise
    min_surprise: float = Field(default=3.0, ge=0.0)
    #: additive smoothing of transition counts
    alpha: float = Field(default=0.1, gt=0.0)
    #: a window alerts only if one of its transitions was seen fewer times than
    #: this in the model's completed sessions (1: only never-seen transitions),
    #: so a sequence seen before never alerts
    seen_enough: int = Field(default=1, ge=1)
    #: recent session scores kept for calibration
    calibration_sessions: int = Field(default=2000, ge=50)
    #: completed sessions between two calibrations
    recalibrate_every: int = Field(default=100, ge=1)
    #: a client with this many completed sessions of its own is scored by its own model
    client_min_sessions: int = Field(default=500, ge=1)
    #: clients per tenant with a model of their own (the busiest ones)
    max_client_models: int = Field(default=32, ge=0)
    #: a session idle this long (event time) is complete: it is learned without an end
    session_idle_s: float = Field(default=1800.0, gt=0)
    #: open sessions per tenant; beyond, the oldest is learned as it stands and forgotten
    max_open_sessions: int = Field(default=20_000, ge=1)
    #: calls of one session kept before they are learned (long sessions learn in chunks)
    max_session_calls: int = Field(default=256, ge=4)
    #: event-time seconds a tenant's model is kept without any tool call
    memory_s: float = Field(default=90 * 24 * 3600.0, gt=0)


# an open session (a list: it is touched on every call). names and ids are
# parallel: names[0] is START (id ""), or the last call of a learned chunk
_S_LAST, _S_NAMES, _S_IDS, _S_ALERTED, _S_CLIENT, _S_OWN, _S_RARE, _S_BEST, _S_KEYS = range(9)
# (_S_BEST: the best window score of learned chunks, under the tenant's and the client's
# model; _S_KEYS: the transition keys of names, made anyway to look the counts up)

#: _S_RARE of a session without a rarely seen transition (far before any window)
_NO_RARE = -(1 << 30)
#: event-time seconds between two sweeps for idle sessions
_SWEEP_S = 60.0
#: client session counters kept per tenant (the busiest survive a trim)
_MAX_CLIENT_COUNTERS = 4096


class UnusualSequence(Detector):
    """A session's tool-call sequence is improbable under the tenant's (or its client's) model.

    The model is a smoothed first-order Markov chain over tool names (with
    START, END and UNK), per tenant, and per client for the busiest
    ``max_client_models`` clients once a client has ``client_min_sessions``
    completed sessions of its own (a session uses the model chosen at its first
    call). A window of ``window`` transitions scores the mean surprise
    (-log p, nats) of its transitions; a session's score is its rarest window's.

    Scored at every call, so an attack is caught before its session ends: a
    call whose transition was seen fewer than ``seen_enough`` times makes the
    windows that hold it candidates, and the session alerts once, at the first
    candidate window whose score exceeds the model's threshold, when the model
    has learned ``min_sessions`` sessions. A window of transitions all seen
    before (a sequence seen before) never alerts; on the common path a call
    costs one dict lookup.

    The threshold is the ``quantile`` of the scores of the model's recent
    completed sessions (scored with the surprises frozen at the last
    calibration), never below ``min_surprise``: about 0.5 % of normal sessions
    reach it, and of those only the ones with a never-seen transition alert.
    A session is learned when it ends (``mcp.session_end``), has been idle for
    ``session_idle_s`` or is pushed out by ``max_open_sessions``; only then do
    its transitions count.
    """

    rule_ids = ("tool.unusual_sequence",)
    severities = {"tool.unusual_sequence": "medium"}
    event_types = frozenset({"mcp.tool_call", "mcp.session_end"})
    key_kind = "tenant"
    Params = UnusualSequenceParams

    def __init__(self, params: Optional[Params] = None, tenant_params: Optional[dict[str, Params]] = None):
        super().__init__(params, tenant_params)
        #: tenant -> its state from a model file (seeds the tenant's state on its first event)
        self.file_models: dict[str, Any] = {}
        self.model_file: Optional[Path] = None
        # what step()'s common path reads, out of the (pydantic) params once (with
        # thresholds per tenant, no count reaches _seen_enough: every call takes
        # the general path, _observe() with the tenant's thresholds)
        self._seen_enough = self.params.seen_enough if not self.tenant_params else sys.maxsize
        self._window = self.params.window
        self._max_calls = self.params.max_session_calls

    # -- models ------------------------------------------------------------

    def attach_models(self, model_dir: Any) -> None:
        path = M.model_path(model_dir, self.name, MODEL_VERSION)
        data = M.read_model_file(path, MARKOV_FORMAT)
        if data is None:
            return
        self.file_models = data["tenants"]
        self.model_file = path
        log.info("%s: loaded models of %d tenant(s) from %s", self.name, len(self.file_models), path)

    def export_models(self, states: dict[str, Any]) -> dict[str, Any]:
        """Tenant -> the learned part of its state (what a model file holds)."""
        return {tenant: {"m": s["m"], "cl": s["cl"], "cn": s["cn"]} for tenant, s in sorted(states.items())}

    # -- the detector interface ---------------------------------------------

    def key(self, ev: Any) -> Optional[str]:
        session = ev.session
        if session is None or not session.id:
            return None  # no session, no sequence
        return ev.tenant

    def state_ttl_s(self) -> float:
        return max([self.params.memory_s, *(p.memory_s for p in self.tenant_params.values())])

    def initial_state(self) -> Any:
        # m: the tenant's model; cl: client -> its model; cn: client -> sessions
        # completed; open: session id -> its open sequence; swept: last idle sweep
        return {"init": False, "m": M.new_markov(), "cl": {}, "cn": {}, "open": {}, "swept": 0.0}

    def step(self, state: Any, ev: Any) -> tuple[Any, list[Alert]]:
        # (a new state is seeded from its model file in _step_slow: its first event has no open session)
        now = event_ts(ev)
        if now - state["swept"] >= _SWEEP_S:
            state["swept"] = now
            self._sweep(state, now, self.params_for(ev.tenant))
        sess = state["open"].get(ev.session.id)
        if sess is not None and ev.type == "mcp.tool_call":
            # the common path, _observe() inlined (a few dict and list operations): a
            # call of an open session whose transition was seen before, with no rarely
            # seen one in the window, nothing to score. The model is the tenant's, or
            # the client's for a session scored by its client's (None if that went
            # to a busier client since: _observe() falls back to the tenant's)
            model = state["cl"].get(sess[_S_CLIENT]) if sess[_S_OWN] else state["m"]
            if model is not None:
                sess[_S_LAST] = now
                names: list[str] = sess[_S_NAMES]
                name = ev.tool.name
                key = f"{names[-1]}{_SEP}{name}"
                if (
                    model["c"].get(key, 0) >= self._seen_enough
                    and sess[_S_RARE] + self._window <= len(names) <= self._max_calls
                ):
                    names.append(name)
                    sess[_S_KEYS].append(key)
                    sess[_S_IDS].append(ev.event_id)
                    return state, NO_ALERTS
                return state, self._observe(state, sess, name, ev.event_id, ev, self.params_for(ev.tenant))
        return self._step_slow(state, ev, sess, now)

    def _step_slow(self, state: Any, ev: Any, sess: Optional[list[Any]], now: float) -> tuple[Any, list[Alert]]:
        """A session's end, its first call, or a call the common path does not take."""
        if not state["init"]:
            self._seed(state, ev.tenant)
        params = self.params_for(ev.tenant)
        opened: dict[str, list[Any]] = state["open"]
        sid = ev.session.id
        if ev.type == "mcp.session_end":
            if sess is None:
                return state, NO_ALERTS  # a session without tool calls has no sequence
            del opened[sid]
            alerts = self._observe(state, sess, M.END, ev.event_id, ev, params)
            self._complete(state, sess, params)
            return state, alerts
        if sess is None:
            if len(opened) >= params.max_open_sessions:
                self._complete(state, opened.pop(next(iter(opened))), params)
            principal = ev.principal
            client = (principal.client_id or "") if principal is not None else ""
            model = state["cl"].get(client) if client else None
            own = 1 if model is not None and model["s"] >= params.client_min_sessions else 0
            sess = opened[sid] = [now, [M.START], [""], 0, client, own, _NO_RARE, [0.0, 0.0], []]
        else:
            sess[_S_LAST] = now
        return state, self._observe(state, sess, ev.tool.name, ev.event_id, ev, params)

    # -- scoring --------------------------------------------------------------

    def _observe(self, state: Any, sess: list[Any], name: str, event_id: str, ev: Any, params: Any) -> list[Alert]:
        """Add one call (or END) to the session; the alert when it completes an improbable window.

        Runs for every tool call that is not on step()'s inlined common path."""
        names: list[str] = sess[_S_NAMES]
        if len(names) > params.max_session_calls:
            self._learn_chunk(state, sess, params)  # a long session learns in chunks
        key = names[-1] + _SEP + name
        names.append(name)
        sess[_S_KEYS].append(key)
        sess[_S_IDS].append(event_id)
        model = state["cl"].get(sess[_S_CLIENT]) if sess[_S_OWN] else state["m"]
        if model is None:  # the client's model went to a busier client meanwhile
            sess[_S_OWN] = 0
            model = state["m"]
        position = len(names) - 1
        if model["c"].get(key, 0) < params.seen_enough:
            sess[_S_RARE] = position
        elif position - sess[_S_RARE] >= params.window:
            return NO_ALERTS
        # a window holding a rarely seen transition: score it
        threshold = model["thr"]
        if (
            threshold is None
            or sess[_S_ALERTED]
            or model["s"] < (params.client_min_sessions if sess[_S_OWN] else params.min_sessions)
        ):
            return NO_ALERTS
        shown = names[max(0, position - params.window):]
        surprises = M.sequence_surprises(model, sess[_S_KEYS][-(len(shown) - 1):], params.alpha)
        score = sum(surprises) / len(surprises)
        if score <= threshold:
            return NO_ALERTS
        sess[_S_ALERTED] = 1
        whose = f"client {sess[_S_CLIENT]}'s" if sess[_S_OWN] else "the tenant's"
        novel = [
            f"{a} -> {b} (seen {M.transition_count(model, a, b)}x)"
            for a, b in zip(shown, shown[1:])
            if M.transition_count(model, a, b) < params.seen_enough
        ]
        ids = [i for i in sess[_S_IDS][-len(shown):] if i]
        session_id = ev.session.id
        return [
            self.alert(
                "tool.unusual_sequence",
                ev,
                identity=(session_id,),
                title="Improbable tool-call sequence",
                description=(
                    f"Session {session_id} called {' -> '.join(shown)}: a mean surprise of {score:.2f} nats per "
                    f"transition over that window, above {whose} threshold {threshold:.2f} (calibrated on "
                    f"{len(model['sc'])} recent sessions; {model['s']} learned). New: {', '.join(novel)}."
                ),
                event_ids=ids,
                score=_score01(score, threshold),
            )
        ]

    # -- learning -------------------------------------------------------------

    def _learn_chunk(self, state: Any, sess: list[Any], params: Any) -> None:
        """A long session learns what it has so far and keeps only its last call."""
        names, ids, keys = sess[_S_NAMES], sess[_S_IDS], sess[_S_KEYS]
        best = sess[_S_BEST]
        client = state["cl"].get(sess[_S_CLIENT]) if sess[_S_CLIENT] else None
        for i, model in enumerate((state["m"], client)):
            if model is None:
                continue
            score = M.frozen_window_score(model, keys, params.alpha, params.window)
            best[i] = max(best[i], score)
            M.learn_sequence(model, keys)
        sess[_S_RARE] -= len(names) - 1
        del names[:-1]
        del ids[:-1]
        keys.clear()

    def _complete(self, state: Any, sess: list[Any], params: Any) -> None:
        """A session is over (ended, idle, or pushed out): calibrate on its score, learn it."""
        names: list[str] = sess[_S_NAMES]
        if len(names) < 2:
            return
        client_id = sess[_S_CLIENT]
        client_model = self._client_model(state, client_id, params) if client_id else None
        keys = sess[_S_KEYS]
        best = sess[_S_BEST]
        own = sess[_S_OWN] and client_model is not None
        # calibrate a model on the sessions it scores: the tenant's on sessions of
        # clients without a model in use, a client's on its own sessions (from half
        # way to its maturity, when the tenant's model still scores them)
        model = state["m"]
        needed = params.min_sessions
        self._learn(model, keys, not own and model["s"] >= needed // 2, best[0], needed, params)
        if client_model is not None:
            needed = params.client_min_sessions
            done = client_model["s"]
            self._learn(client_model, keys, done >= needed // 2 and (own or done < needed), best[1], needed, params)

    @staticmethod
    def _learn(model: dict[str, Any], keys: list[str], scored: bool, best: float, needed: int, params: Any) -> None:
        """Learn a completed session into ``model``, after recording its score for calibration if ``scored``."""
        if scored:
            # the session's rarest window under this model, for its calibration
            score = M.frozen_window_score(model, keys, params.alpha, params.window)
            M.record_score(model, max(score, best), params.calibration_sessions)
        M.learn_sequence(model, keys)
        done = model["s"] = model["s"] + 1
        if done == needed // 2 or done == needed or done - model["cal"] >= params.recalibrate_every:
            M.calibrate(model, params.quantile, params.min_surprise, params.alpha, params.margin)

    def _client_model(self, state: Any, client_id: str, params: Any) -> Optional[dict[str, Any]]:
        """The client's model, made when it is among the busiest ``max_client_models`` clients."""
        counts: dict[str, int] = state["cn"]
        counts[client_id] = counts.get(client_id, 0) + 1
        if len(counts) > _MAX_CLIENT_COUNTERS:
            keep = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[: _MAX_CLIENT_COUNTERS // 2]
            state["cn"] = counts = dict(keep)
            counts.setdefault(client_id, 1)
        models: dict[str, Any] = state["cl"]
        model = models.get(client_id)
        if model is not None or params.max_client_models == 0:
            return model
        if len(models) >= params.max_client_models:
            # replace the least busy client's model if this client is now busier
            victim = min(models, key=lambda c: (counts.get(c, 0), c))
            if counts.get(victim, 0) >= counts[client_id]:
                return None
            del models[victim]
        model = models[client_id] = M.new_markov()
        return model

    def _sweep(self, state: Any, now: float, params: Any) -> None:
        opened = state["open"]
        idle = [sid for sid, sess in opened.items() if now - sess[_S_LAST] > params.session_idle_s]
        for sid in idle:
            self._complete(state, opened.pop(sid), params)

    def _seed(self, state: Any, tenant: str) -> None:
        state["init"] = True
        seed = self.file_models.get(tenant)
        if seed:
            for part in ("m", "cl", "cn"):
                if part in seed:
                    state[part] = copy.deepcopy(seed[part])

    def finish(self, states: dict[str, Any]) -> None:
        """End of a training run: every open session is complete."""
        for tenant, state in states.items():
            params = self.params_for(tenant)
            opened = state["open"]
            while opened:
                self._complete(state, opened.pop(next(iter(opened))), params)


# ==========================================================================
# volume.anomaly


class VolumeAnomalyParams(Params):
    #: a principal's minutes alert only from this many event-time seconds after its first call
    min_history_s: float = Field(default=1800.0, ge=0)
    #: ... and once its baseline holds this many active minutes
    min_baseline_minutes: int = Field(default=20, ge=3)
    #: active minutes a baseline keeps (the most recent)
    baseline_minutes: int = Field(default=120, ge=5)
    #: active minutes between two recomputations of a principal's baseline
    restat_every: int = Field(default=5, ge=1)
    #: robust z-score at which a feature alerts
    z_threshold: float = Field(default=6.0, gt=0)
    #: the error ratio is scored only in minutes with at least this many calls
    ratio_min_calls: int = Field(default=10, ge=1)
    #: smallest scale of each feature's z-score: calls, distinct tools, error ratio
    min_scale_calls: float = Field(default=1.0, gt=0)
    min_scale_tools: float = Field(default=1.0, gt=0)
    min_scale_ratio: float = Field(default=0.1, gt=0)
    #: the isolation forest over the z-score vectors (needs scikit-learn to fit)
    forest: bool = True
    #: trees of the forest
    if_trees: int = Field(default=50, ge=10, le=500)
    #: training vectors kept per tenant (the most recent)
    if_max_samples: int = Field(default=2048, ge=64)
    #: training vectors needed before the first fit
    if_min_samples: int = Field(default=256, ge=32)
    #: event-time seconds between two fits of a tenant's forest
    if_refit_s: float = Field(default=3600.0, gt=0)
    #: share of training vectors beyond the forest's threshold
    if_contamination: float = Field(default=0.005, gt=0, lt=0.5)
    #: only minutes whose largest z-score reaches this are scored by the forest
    if_gate_z: float = Field(default=4.0, ge=0)
    #: random_state of the forest
    seed: int = 20261120
    #: event-time seconds a principal's baseline is kept without calls
    principal_ttl_s: float = Field(default=14 * 24 * 3600.0, gt=0)
    #: principals with a baseline per tenant (the least recently active go first)
    max_principals: int = Field(default=100_000, ge=1)
    #: event-time seconds a tenant's state is kept without any tool call
    memory_s: float = Field(default=90 * 24 * 3600.0, gt=0)


# the open minute of one principal
_C_CALLS, _C_ERRORS, _C_TOOLS, _C_IDS, _C_LAST_ID, _C_LAST_T, _C_SUBJECT, _C_CLIENT, _C_FIRST_T = range(9)
# a principal's baseline
_P_FIRST, _P_LAST, _P_HIST, _P_CENTER, _P_SCALE, _P_SINCE = range(6)

_FEATURES = ("calls per minute", "distinct tools per minute", "error ratio")
_FAILED = frozenset({"error", "denied"})
#: event ids kept per principal-minute as evidence (the first ones; the last is added)
_MINUTE_IDS = 9
#: distinct tool names counted per principal-minute
_MAX_TOOLS = 256
#: z-scores fed to the forest are clipped to this range
_Z_CLIP = (-10.0, 50.0)


class VolumeAnomaly(Detector):
    """A principal's calls per minute, distinct tools per minute or error ratio
    departs from its own baseline (robust z ≥ ``z_threshold``), or the tenant's
    isolation forest over those departures scores the minute as an outlier.

    A principal's minutes are its *active* minutes: a minute with no call is
    no observation (idle is not anomalous, and counting idle minutes would make
    every minute of an intermittent user an outlier). A minute is closed when
    the tenant's event time reaches a later minute (events arrive in event-time
    order), and scored against the principal's baseline of its recent active
    minutes: median and scale per feature (see
    :func:`~mcpsift.detectors.models.robust_center_scale`: MAD, with the mean
    absolute deviation, the Poisson noise of a count and a floor when MAD is
    0). Only upward departures alert. A principal alerts only from
    ``min_history_s`` after its first call and once its baseline holds
    ``min_baseline_minutes`` minutes. One alert per (principal, minute).
    """

    rule_ids = ("volume.anomaly",)
    severities = {"volume.anomaly": "medium"}
    event_types = frozenset({"mcp.tool_call"})
    key_kind = "tenant"
    Params = VolumeAnomalyParams

    def __init__(self, params: Optional[Params] = None, tenant_params: Optional[dict[str, Params]] = None):
        super().__init__(params, tenant_params)
        self.file_models: dict[str, Any] = {}
        self.model_file: Optional[Path] = None
        #: tenant -> (fit id, Forest): fitted forests are rebuilt from state, not stored in it
        self._forests: dict[str, tuple[Any, Optional[M.Forest]]] = {}
        self._warned_no_sklearn = False

    # -- models ------------------------------------------------------------

    def attach_models(self, model_dir: Any) -> None:
        path = M.model_path(model_dir, self.name, MODEL_VERSION)
        data = M.read_model_file(path, VOLUME_FORMAT)
        if data is None:
            return
        self.file_models = data["tenants"]
        self.model_file = path
        log.info("%s: loaded baselines and forests of %d tenant(s) from %s", self.name, len(self.file_models), path)

    def export_models(self, states: dict[str, Any]) -> dict[str, Any]:
        out = {}
        for tenant, state in sorted(states.items()):
            forest = self._forest(tenant, state, self.params_for(tenant))
            out[tenant] = {
                "p": state["p"],
                "if": {**state["if"], "src": "file" if forest is not None else None},
                "forest": forest.to_json() if forest is not None else None,
            }
        return out

    # -- the detector interface ---------------------------------------------

    def key(self, ev: Any) -> Optional[str]:
        return ev.tenant

    def state_ttl_s(self) -> float:
        return max([self.params.memory_s, *(p.memory_s for p in self.tenant_params.values())])

    def initial_state(self) -> Any:
        # min: the open minute (nx: where the next one starts); cur: principal -> its counters in that minute;
        # p: principal -> baseline; if: the forest's training vectors and fit
        return {
            "init": False,
            "min": None,
            "nx": None,
            "cur": {},
            "p": {},
            "if": {"train": [], "pend": [], "fit": 0, "at": None, "thr": None, "src": None},
            "swept": None,
        }

    def step(self, state: Any, ev: Any) -> tuple[Any, list[Alert]]:
        now = event_ts(ev)
        alerts = NO_ALERTS
        try:
            later = state["nx"]  # where the minute after the open one starts (None before the first)
        except KeyError:  # a snapshot of a version without it
            later = state["nx"] = None if state["min"] is None else (state["min"] + 1) * 60.0
        if later is None or now >= later:  # (an earlier minute: counted in the open one)
            alerts = self._next_minute(state, ev.tenant, now)
        principal = ev.principal
        if principal is None:
            return state, alerts
        subject = principal.subject
        pkey = subject or (f"client:{principal.client_id}" if principal.client_id else None)
        if pkey is None:
            return state, alerts
        rec = state["cur"].get(pkey)
        if rec is None:
            rec = state["cur"][pkey] = [0, 0, {}, [], "", now, subject, principal.client_id, now]
        calls = rec[_C_CALLS] = rec[_C_CALLS] + 1
        outcome = ev.outcome
        if outcome is not None:
            status = outcome.status
            if status != "ok" and status in _FAILED:
                rec[_C_ERRORS] += 1
        tools: dict[str, None] = rec[_C_TOOLS]  # distinct tool names (a dict: one lookup)
        name = ev.tool.name
        if name not in tools and len(tools) < _MAX_TOOLS:
            try:
                tools[name] = None
            except TypeError:  # a list, in a snapshot of an older version
                tools.append(name)  # type: ignore[attr-defined]
        if calls <= _MINUTE_IDS:
            rec[_C_IDS].append(ev.event_id)  # (the last id is in there too)
        else:
            rec[_C_LAST_ID] = ev.event_id
        rec[_C_LAST_T] = now
        return state, alerts

    def _next_minute(self, state: Any, tenant: str, now: float) -> list[Alert]:
        """The tenant's first event, or its first of a later minute: close the open minute."""
        if not state["init"]:
            self._seed(state, tenant)
        minute = int(now // 60.0)
        alerts = self._close_minute(state, tenant)
        state["min"] = minute
        state["nx"] = (minute + 1) * 60.0
        return alerts

    # -- closing a minute -----------------------------------------------------

    def _close_minute(self, state: Any, tenant: str) -> list[Alert]:
        current = state["cur"]
        minute = state["min"]
        if not current or minute is None:
            state["cur"] = {}
            return NO_ALERTS
        params = self.params_for(tenant)
        profiles: dict[str, list[Any]] = state["p"]
        forest_state = state["if"]
        alerts: list[Alert] = []
        gated: list[tuple[str, list[Any], list[float], list[float], list[float], float]] = []
        for pkey, rec in current.items():
            calls = rec[_C_CALLS]
            x = [calls, len(rec[_C_TOOLS]), round(rec[_C_ERRORS] / calls, 4)]
            prof = profiles.get(pkey)
            if prof is None:
                prof = profiles[pkey] = [rec[_C_FIRST_T], minute, [], None, None, 0]
            else:
                # re-inserted: profiles stay ordered by last activity (oldest first)
                del profiles[pkey]
                profiles[pkey] = prof
            hist: list[list[float]] = prof[_P_HIST]
            if len(hist) >= params.min_baseline_minutes and minute * 60.0 - prof[_P_FIRST] >= params.min_history_s:
                if prof[_P_CENTER] is None or prof[_P_SINCE] >= params.restat_every:
                    self._restat(prof, params)
                center, scale = prof[_P_CENTER], prof[_P_SCALE]
                z = [(x[i] - center[i]) / scale[i] for i in range(3)]
                if calls < params.ratio_min_calls:
                    z[2] = 0.0
                vector = [round(min(max(v, _Z_CLIP[0]), _Z_CLIP[1]), 3) for v in z]
                forest_state["pend"].append(vector)
                top = max(z)
                if top >= params.z_threshold:
                    alerts.append(self._alert(tenant, minute, rec, x, z, center, scale, params, None))
                elif params.forest and top >= params.if_gate_z:
                    gated.append((pkey, rec, x, z, vector, top))
            # the new minute joins the baseline (a ring of the most recent active minutes)
            if len(hist) < params.baseline_minutes:
                hist.append(x)
            else:
                del hist[: len(hist) - params.baseline_minutes + 1]
                hist.append(x)
            prof[_P_LAST] = minute
            prof[_P_SINCE] += 1
        state["cur"] = {}
        if gated:
            forest = self._forest(tenant, state, params)
            threshold = forest_state["thr"]
            if forest is not None and threshold is not None:
                for pkey, rec, x, z, vector, top in gated:
                    anomaly = -forest.score(vector)
                    if anomaly >= threshold:
                        prof = profiles[pkey]
                        alerts.append(
                            self._alert(tenant, minute, rec, x, z, prof[_P_CENTER], prof[_P_SCALE], params, (anomaly, threshold))
                        )
        pend = forest_state["pend"]
        if len(pend) > params.if_max_samples:
            del pend[: len(pend) - params.if_max_samples]
        if forest_state["at"] is None and forest_state["src"] == "file":
            forest_state["at"] = minute  # the model file's forest counts as fitted now
        if params.forest and (forest_state["at"] is None or (minute - forest_state["at"]) * 60.0 >= params.if_refit_s):
            if len(forest_state["train"]) + len(pend) >= params.if_min_samples:
                self._refit(tenant, state, params, minute)
        if state["swept"] is None or minute - state["swept"] >= 60:
            state["swept"] = minute
            self._sweep_principals(profiles, minute, params)
        return alerts

    @staticmethod
    def _restat(prof: list[Any], params: Any) -> None:
        hist = prof[_P_HIST]
        centers, scales = [], []
        for i, (floor, poisson) in enumerate(
            ((params.min_scale_calls, True), (params.min_scale_tools, True), (params.min_scale_ratio, False))
        ):
            center, scale = M.robust_center_scale([h[i] for h in hist], floor, poisson)
            centers.append(center)
            scales.append(scale)
        prof[_P_CENTER] = centers
        prof[_P_SCALE] = scales
        prof[_P_SINCE] = 0

    def _sweep_principals(self, profiles: dict[str, list[Any]], minute: int, params: Any) -> None:
        horizon = minute - params.principal_ttl_s / 60.0
        stale = []
        for pkey, prof in profiles.items():  # ordered by last activity: stop at the first fresh one
            if prof[_P_LAST] >= horizon:
                break
            stale.append(pkey)
        for pkey in stale:
            del profiles[pkey]
        while len(profiles) > params.max_principals:
            del profiles[next(iter(profiles))]

    # -- the forest -------------------------------------------------------------

    def _refit(self, tenant: str, state: Any, params: Any, minute: int) -> None:
        forest_state = state["if"]
        forest_state["at"] = minute
        if not M.forest_available():
            if not self._warned_no_sklearn:
                self._warned_no_sklearn = True
                log.warning(
                    "volume.anomaly: scikit-learn is not installed, so the isolation forest is off "
                    "(robust z-scores still alert): pip install 'mcpsift[all]'"
                )
            return
        train = (forest_state["train"] + forest_state["pend"])[-params.if_max_samples:]
        forest_state["train"] = train
        forest_state["pend"] = []
        forest_state["fit"] += 1
        forest_state["src"] = "online"
        forest = self._fit(train, params)
        self._forests[tenant] = (("online", forest_state["fit"]), forest)
        forest_state["thr"] = self._calibrate(forest, train, params)

    @staticmethod
    def _fit(train: list[list[float]], params: Any) -> M.Forest:
        return M.fit_forest(train, params.if_trees, params.seed)

    @staticmethod
    def _calibrate(forest: M.Forest, train: list[list[float]], params: Any) -> float:
        """The anomaly score (-score_samples) that ``if_contamination`` of the training vectors reach."""
        scores = forest.training_scores
        if scores is None or len(scores) != len(train):
            scores = [forest.score(v) for v in train]
        anomalies = sorted(-v for v in scores)
        rank = min(len(anomalies) - 1, max(0, math.ceil((1.0 - params.if_contamination) * len(anomalies)) - 1))
        return anomalies[rank]

    def _forest(self, tenant: str, state: Any, params: Any) -> Optional[M.Forest]:
        """The tenant's current forest: cached, else rebuilt from state (a
        restored snapshot) or taken from the model file."""
        forest_state = state["if"]
        src = forest_state["src"]
        if src is None:
            return None
        wanted = (src, forest_state["fit"])
        cached = self._forests.get(tenant)
        if cached is not None and cached[0] == wanted:
            return cached[1]
        forest: Optional[M.Forest] = None
        if src == "file":
            data = (self.file_models.get(tenant) or {}).get("forest")
            forest = M.Forest.from_json(data) if data else None
        elif M.forest_available() and forest_state["train"]:
            forest = self._fit(forest_state["train"], params)
        self._forests[tenant] = (wanted, forest)
        return forest

    # -- alerts ---------------------------------------------------------------

    def _alert(
        self,
        tenant: str,
        minute: int,
        rec: list[Any],
        x: list[float],
        z: list[float],
        center: list[float],
        scale: list[float],
        params: Any,
        forest: Optional[tuple[float, float]],
    ) -> Alert:
        start = _dt.datetime.fromtimestamp(minute * 60, _UTC)
        subject = rec[_C_SUBJECT]
        who = subject or f"client {rec[_C_CLIENT]}"
        parts = [
            f"{name} {x[i]:.3g} (baseline {center[i]:.3g} ± {scale[i]:.3g}, z {z[i]:.1f})"
            for i, name in enumerate(_FEATURES)
        ]
        if forest is None:
            top = max(range(3), key=lambda i: z[i])
            why = (
                f"its {_FEATURES[top]} ({x[top]:.3g}) is {z[top]:.1f} robust z-scores above its baseline "
                f"(threshold {params.z_threshold:g})"
            )
            score = _score01(z[top], params.z_threshold)
        else:
            why = (
                f"the tenant's isolation forest scores the combination {forest[0]:.3f}, beyond its calibrated "
                f"threshold {forest[1]:.3f}"
            )
            score = round(min(1.0, max(0.0, forest[0])), 4)
        ids = list(rec[_C_IDS])
        if rec[_C_CALLS] > _MINUTE_IDS and rec[_C_LAST_ID] not in ids:
            ids.append(rec[_C_LAST_ID])
        return Alert(
            alert_id=make_alert_id("volume.anomaly", tenant, subject or rec[_C_CLIENT], minute),
            rule_id="volume.anomaly",
            severity=self.severities["volume.anomaly"],  # type: ignore[arg-type]
            time=_dt.datetime.fromtimestamp(rec[_C_LAST_T], _UTC),
            tenant=tenant,
            principal_subject=subject,
            client_id=rec[_C_CLIENT],
            event_ids=ids,
            title=f"Unusual call volume for {who}",
            description=(
                f"{who} in the minute from {start.strftime('%Y-%m-%d %H:%M')} UTC: {why}. "
                f"{'; '.join(parts)}."
            ),
            score=score,
            detector=type(self).__name__,
        )

    # -- seeding and training -------------------------------------------------

    def _seed(self, state: Any, tenant: str) -> None:
        state["init"] = True
        seed = self.file_models.get(tenant)
        if not seed:
            return
        state["p"] = copy.deepcopy(seed.get("p", {}))
        saved = seed.get("if") or {}
        if saved.get("src") == "file" and seed.get("forest"):
            state["if"].update(
                train=list(saved.get("train", [])), pend=[], fit=int(saved.get("fit", 0)),
                at=None, thr=saved.get("thr"), src="file",
            )
        else:
            state["if"]["pend"] = list(saved.get("train", [])) + list(saved.get("pend", []))

    def finish(self, states: dict[str, Any]) -> None:
        """End of a training run: close the open minute, fit on everything seen."""
        for tenant, state in states.items():
            params = self.params_for(tenant)
            self._close_minute(state, tenant)
            if params.forest and len(state["if"]["train"]) + len(state["if"]["pend"]) >= params.if_min_samples:
                self._refit(tenant, state, params, state["min"] if state["min"] is not None else 0)


#: this family's detectors, in the order they run (registry.FAMILY_MODULES)
DETECTORS = (UnusualSequence, VolumeAnomaly)


# ==========================================================================
# mcpsift train


class TrainReport:
    """What :func:`train_models` learned, per tenant."""

    def __init__(self) -> None:
        self.events = 0
        self.files: list[Path] = []
        self.sequence: dict[str, dict[str, Any]] = {}
        self.volume: dict[str, dict[str, Any]] = {}

    def summary(self) -> list[str]:
        """Human lines: per tenant what each model learned and its threshold."""

        def number(value: Optional[float]) -> str:
            return "none yet" if value is None else f"{value:.3f}"

        lines = []
        for tenant, info in self.sequence.items():
            ready = "" if info["ready"] else f" (fewer than {info['min_sessions']} sessions: will not alert yet)"
            lines.append(
                f"tool.unusual_sequence  tenant {tenant}: {info['sessions']:,} sessions, {info['tools']} tools, "
                f"{info['client_models']} client model(s), threshold {number(info['threshold'])} nats/transition{ready}"
            )
        for tenant, info in self.volume.items():
            lines.append(
                f"volume.anomaly         tenant {tenant}: {info['principals']:,} principals "
                f"({info['with_baseline']:,} with a baseline), forest on {info['vectors']:,} minute vectors, "
                f"threshold {number(info['threshold'])}"
            )
        return lines or ["no tool calls in the range: the model files hold no tenant"]


def train_models(
    events: Iterable[Any],
    model_dir: Path | str,
    *,
    sequence: Optional[UnusualSequence] = None,
    volume: Optional[VolumeAnomaly] = None,
    trained_from: Optional[str] = None,
    trained_to: Optional[str] = None,
    on_progress: Optional[Callable[[int], None]] = None,
) -> TrainReport:
    """Learn both models from ``events`` (decoded events, in event-time order)
    and write ``<model_dir>/tool.unusual_sequence.v1.json`` and
    ``<model_dir>/volume.anomaly.v1.json``.

    The detectors run exactly as in detection (same steps, fresh state, no
    model files), their alerts are dropped, open sessions are then learned and
    the last minute closed, and the forests are fitted on all vectors seen.
    """
    sequence = sequence if sequence is not None else UnusualSequence()
    volume = volume if volume is not None else VolumeAnomaly()
    seq_states: dict[str, Any] = {}
    vol_states: dict[str, Any] = {}
    report = TrainReport()
    for ev in events:
        report.events += 1
        if ev.type in sequence.event_types:
            key = sequence.key(ev)
            if key is not None:
                state = seq_states.get(key)
                if state is None:
                    state = seq_states[key] = sequence.initial_state()
                seq_states[key], _ = sequence.step(state, ev)
        if ev.type in volume.event_types:
            key = volume.key(ev)
            if key is not None:
                state = vol_states.get(key)
                if state is None:
                    state = vol_states[key] = volume.initial_state()
                vol_states[key], _ = volume.step(state, ev)
        if on_progress is not None and report.events % 10_000 == 0:
            on_progress(report.events)
    if on_progress is not None:
        on_progress(report.events)
    sequence.finish(seq_states)
    volume.finish(vol_states)
    header = {
        "version": MODEL_VERSION,
        "trained_from": trained_from,
        "trained_to": trained_to,
        "events": report.events,
        "written_at": _dt.datetime.now(_UTC).isoformat(timespec="seconds"),
    }
    report.files.append(
        M.write_model_file(
            M.model_path(model_dir, sequence.name, MODEL_VERSION),
            {**header, "format": MARKOV_FORMAT, "params": sequence.params.model_dump()},
            sequence.export_models(seq_states),
        )
    )
    report.files.append(
        M.write_model_file(
            M.model_path(model_dir, volume.name, MODEL_VERSION),
            {**header, "format": VOLUME_FORMAT, "params": volume.params.model_dump(), "sklearn": _sklearn_version()},
            volume.export_models(vol_states),
        )
    )
    for tenant, state in sorted(seq_states.items()):
        model = state["m"]
        params = sequence.params_for(tenant)
        report.sequence[tenant] = {
            "sessions": model["s"],
            "tools": len({name for key in model["c"] for name in M.split_key(key)} - {M.START, M.END}),
            "threshold": model["thr"],
            "ready": model["s"] >= params.min_sessions,
            "min_sessions": params.min_sessions,
            "client_models": sum(1 for m in state["cl"].values() if m["s"] >= params.client_min_sessions),
        }
    for tenant, state in sorted(vol_states.items()):
        params = volume.params_for(tenant)
        report.volume[tenant] = {
            "principals": len(state["p"]),
            "with_baseline": sum(1 for p in state["p"].values() if len(p[_P_HIST]) >= params.min_baseline_minutes),
            "vectors": len(state["if"]["train"]),
            "threshold": state["if"]["thr"],
        }
    return report


def train_from_store(
    store: Any,
    since: _dt.datetime,
    until: _dt.datetime,
    model_dir: Path | str,
    settings: Any = None,
    *,
    on_progress: Optional[Callable[[int], None]] = None,
) -> TrainReport:
    """``mcpsift train``: replay the stored events of ``[since, until)`` in
    event-time order through fresh detectors built with ``settings``'
    thresholds, and write the model files to ``model_dir``."""
    import msgspec

    from mcpsift.events import EventRecord

    from .registry import build_detectors

    det = settings.detectors if settings is not None else None
    detectors, _ = build_detectors(
        [UnusualSequence.rule_ids[0], VolumeAnomaly.rule_ids[0]],
        (),
        det.thresholds if det is not None else None,
        det.tenant_thresholds if det is not None else None,
        model_dir=None,  # learn from scratch: no model file seeds the state
    )
    sequence = next(d for d in detectors if isinstance(d, UnusualSequence))
    volume = next(d for d in detectors if isinstance(d, VolumeAnomaly))
    decode = msgspec.json.Decoder(EventRecord).decode  # stored payloads were validated and enriched on ingest
    return train_models(
        (decode(payload) for payload in store.iter_payloads_between(since, until)),
        model_dir,
        sequence=sequence,
        volume=volume,
        trained_from=since.isoformat(),
        trained_to=until.isoformat(),
        on_progress=on_progress,
    )


def _sklearn_version() -> Optional[str]:
    try:
        import sklearn
    except ImportError:
        return None
    return str(sklearn.__version__)
