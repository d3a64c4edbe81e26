"""PLUGIN_NAME: an alert rule. Active while the p99 latency of the current
window is above `max_p99_ms`; the proxy fires the alert once that has held
for `for_ms` (10 s), and keeps it firing for `keep_firing_for_ms` after it
clears.

Config (JSON, every key optional): {"max_p99_ms": 250, "min_requests": 20}.
"""

from typing import List

import switchyard_sdk as sy
from wit_world import exports

DEFAULTS = {"max_p99_ms": 250, "min_requests": 20}
# componentize-py makes a new `Alert` for every call: what lasts between
# calls lives at module level.
CONFIG = dict(DEFAULTS)


class Alert(exports.Alert):
    def init(self, config: str) -> None:
        CONFIG.update(sy.json_config("PLUGIN_NAME", config, DEFAULTS))
        sy.log.info(f"watching p99 against {CONFIG['max_p99_ms']} ms")

    def describe(self):
        return sy.rule_meta(
            "PLUGIN_NAME", "p99 latency above a bound", for_ms=10_000, keep_firing_for_ms=30_000
        )

    def evaluate(self, snapshot: sy.Snapshot) -> List:
        window = snapshot.current
        if window.requests < CONFIG["min_requests"]:
            sy.log.debug(f"{window.requests} requests: not judged")
            return []
        p99_ms = window.p99_us / 1000.0
        bound = float(CONFIG["max_p99_ms"])
        return [
            sy.finding(
                "p99",
                active=p99_ms > bound,
                value=p99_ms,
                threshold=bound,
                summary=f"p99 is {p99_ms:.0f} ms (bound {bound:.0f} ms)",
                severity=sy.Severity.HIGH,
            )
        ]
