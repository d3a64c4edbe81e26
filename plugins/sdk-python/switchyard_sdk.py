"""The Switchyard plugin SDK for Python.

Typed helpers over the bindings componentize-py generates from the plugin
contract (`wit/plugins.wit`, package `switchyard:plugins@0.2.0`): parsing
the plugin's config, the proxy's log, and constructors for the records a
plugin returns, with the contract's defaults. The generated classes stay
available as they are (`wit_world.exports.alert.Finding`, ...); every
record field is documented in `wit/plugins.wit`.

A plugin is a module (`app.py`) with one class named after its kind's
export, built into a component with

    componentize-py -d wit -w WORLD componentize app -o PLUGIN.wasm

where WORLD is `alert-rule` (class `Alert`), `optimizer` (class
`Optimize`) or `operation-generator` (class `Generate`). `switchyard plugin
new --lang python` writes such a project with this file in it.

Plugins see only their inputs: WASI grants clocks and random numbers, no
files, environment or sockets. An exception raised by a call traps the
plugin; the proxy counts the failure and carries on without it. To refuse
a config, `init` raises `componentize_py_types.Err("why")` (what
`json_config` does).
"""

import json
from typing import Dict, List, Optional

from componentize_py_types import Err
from wit_world.imports import host

# The snapshot's types, in the worlds that are given a snapshot (alert
# rules and optimizers; generators are not).
try:
    from wit_world.imports import types

    Severity = types.Severity
    Snapshot = types.Snapshot
    WindowStats = types.WindowStats
    BackendStats = types.BackendStats
    Trend = types.Trend
    TrendSeries = types.TrendSeries
    TrendDirection = types.TrendDirection
    Label = types.Label
except ImportError:
    types = None

# Each world exports one interface; only the plugin's own is importable.
try:
    from wit_world.exports import alert as _alert
except ImportError:
    _alert = None
try:
    from wit_world.exports import optimize as _optimize
except ImportError:
    _optimize = None
try:
    from wit_world.exports import generate as _generate
except ImportError:
    _generate = None


def json_config(plugin: str, config: str, defaults: Dict) -> Dict:
    """The plugin's config string (its `config` table, as JSON) over
    `defaults`. An empty config gives the defaults; bad JSON, a value that
    is not an object, or a key `defaults` lacks refuses the config, with a
    reason the proxy reports at load."""
    if not config.strip():
        return dict(defaults)
    try:
        value = json.loads(config)
    except ValueError as e:
        raise Err(f"{plugin}: config is not JSON: {e}")
    if not isinstance(value, dict):
        raise Err(f"{plugin}: config must be a JSON object, got {config!r}")
    unknown = sorted(set(value) - set(defaults))
    if unknown:
        raise Err(
            f"{plugin}: unknown config key(s) {', '.join(unknown)}"
            f" (known: {', '.join(sorted(defaults))})"
        )
    merged = dict(defaults)
    merged.update(value)
    return merged


class log:
    """Writes to the proxy's log, tagged with the plugin's name (and shown
    by `switchyard plugin test` under `logs`): `log.info("...")` and
    likewise `debug`, `warn`, `error`."""

    debug = staticmethod(lambda message: host.log(host.LogLevel.DEBUG, message))
    info = staticmethod(lambda message: host.log(host.LogLevel.INFO, message))
    warn = staticmethod(lambda message: host.log(host.LogLevel.WARN, message))
    error = staticmethod(lambda message: host.log(host.LogLevel.ERROR, message))


def error_rate(window) -> float:
    """Errors / requests of a window; 0 when it had no requests."""
    return window.errors / window.requests if window.requests else 0.0


# Alert rules.


def rule_meta(name: str, description: str, for_ms: int = 0, keep_firing_for_ms: int = 0):
    """What a rule says of itself: a finding must stay active `for_ms`
    before its alert fires, which keeps firing `keep_firing_for_ms` after
    it clears."""
    return _alert.RuleMeta(name, description, for_ms, keep_firing_for_ms)


def finding(
    key: str,
    active: bool,
    value: float,
    threshold: float,
    summary: str,
    severity=None,
    labels: Optional[Dict[str, str]] = None,
):
    """One finding (severity `Severity.HIGH` unless given); `labels` as a
    dict."""
    severity = Severity.HIGH if severity is None else severity
    pairs = [Label(k, v) for k, v in (labels or {}).items()]
    return _alert.Finding(key, active, severity, float(value), float(threshold), pairs, summary)


# Optimizers.


def concurrency_limit(limit: int):
    """An adjustment of the admission concurrency limit."""
    return _optimize.Adjustment_ConcurrencyLimit(int(limit))


def backend_weight(backend: str, weight: int):
    """An adjustment of one backend's weight (`backend` as in
    `BackendStats.id`, `upstream/address`)."""
    return _optimize.Adjustment_BackendWeight(_optimize.WeightChange(backend, int(weight)))


def cache_capacity_bytes(capacity: int):
    """An adjustment of the response cache's capacity."""
    return _optimize.Adjustment_CacheCapacityBytes(int(capacity))


def decision(adjustments: List, reason: str, state: bytes = b""):
    """What an optimizer decided; `state` comes back on the next call."""
    return _optimize.Decision(list(adjustments), reason, bytes(state))


# Operation generators.


def operation(
    kind,
    method: str,
    path: str,
    body: Optional[bytes] = None,
    headers: Optional[Dict[str, str]] = None,
    name: str = "",
    capture_json_field: Optional[str] = None,
):
    """One request for the load generator. GET, HEAD, PUT, DELETE and
    OPTIONS count as idempotent (may be retried). `capture_json_field`
    names the field of a JSON answer that holds a created entity's id."""
    method = method.upper()
    pairs = [_generate.Header(k, v) for k, v in (headers or {}).items()]
    if body is not None and not any(h.name.lower() == "content-type" for h in pairs):
        pairs.append(_generate.Header("content-type", "application/json"))
    capture = _generate.IdSource_JsonField(capture_json_field) if capture_json_field else None
    idempotent = method in ("GET", "HEAD", "PUT", "DELETE", "OPTIONS")
    return _generate.Operation(kind, name, method, path, pairs, body, idempotent, capture)


def get(kind, path: str):
    """A bodiless GET."""
    return operation(kind, "GET", path)
