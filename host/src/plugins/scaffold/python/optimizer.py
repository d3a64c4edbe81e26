"""PLUGIN_NAME: an optimizer. Lowers the concurrency limit by a tenth while
the p99 latency is above `target_p99_ms`, and raises it by 10 while it is
below, within `min_limit`..`max_limit` (the proxy holds every change to its
`[optimizer.bounds]` as well).

Config (JSON, every key optional):
{"target_p99_ms": 100, "min_limit": 10, "max_limit": 1000, "min_requests": 20}.
"""

import json

import switchyard_sdk as sy
from componentize_py_types import Err
from wit_world import exports

DEFAULTS = {"target_p99_ms": 100, "min_limit": 10, "max_limit": 1000, "min_requests": 20}
# componentize-py makes a new `Optimize` for every call: what lasts between
# calls lives at module level (or, to survive a hot swap, in `state`).
CONFIG = dict(DEFAULTS)


class Optimize(exports.Optimize):
    def init(self, config: str) -> None:
        CONFIG.update(sy.json_config("PLUGIN_NAME", config, DEFAULTS))
        low, high = CONFIG["min_limit"], CONFIG["max_limit"]
        if not 0 < low <= high:
            raise Err(f"need 0 < min_limit <= max_limit, got {low}..{high}")

    def decide(self, snapshot: sy.Snapshot, state: bytes):
        c = CONFIG
        # Kept by the proxy between decisions, and across a hot swap.
        st = json.loads(state) if state else {"decisions": 0}
        st["decisions"] += 1
        state = json.dumps(st).encode()
        # 0: no limit in force yet; start from the top.
        limit = snapshot.concurrency_limit or c["max_limit"]
        window = snapshot.current
        if window.requests < c["min_requests"]:
            return sy.decision([], f"limit {limit} kept: {window.requests} requests", state)
        p99_ms = window.p99_us // 1000
        if p99_ms > c["target_p99_ms"]:
            nxt = limit - limit // 10
        else:
            nxt = limit + 10
        nxt = max(c["min_limit"], min(c["max_limit"], nxt))
        adjustments = [] if nxt == limit else [sy.concurrency_limit(nxt)]
        reason = f"p99 {p99_ms} ms against {c['target_p99_ms']} ms: limit {limit} -> {nxt}"
        return sy.decision(adjustments, reason, state)
