// PLUGIN_NAME: an alert rule. Active while the p99 latency of the current
// window is above `max_p99_ms`; the proxy fires the alert once that has
// held for `forMs` (10 s), and keeps it firing for `keepFiringForMs` after
// it clears.
//
// Config (JSON, every key optional): {"max_p99_ms": 250, "min_requests": 20}.

import * as sy from './switchyard_sdk.js';

const DEFAULTS = { max_p99_ms: 250, min_requests: 20 };
let config = { ...DEFAULTS };

export const alert = {
  init(raw) {
    config = sy.jsonConfig('PLUGIN_NAME', raw, DEFAULTS);
    sy.log.info(`watching p99 against ${config.max_p99_ms} ms`);
  },

  describe() {
    return sy.ruleMeta('PLUGIN_NAME', 'p99 latency above a bound', {
      forMs: 10_000,
      keepFiringForMs: 30_000,
    });
  },

  evaluate(snapshot) {
    const window = snapshot.current;
    if (sy.num(window.requests) < config.min_requests) {
      sy.log.debug(`${window.requests} requests: not judged`);
      return [];
    }
    const p99Ms = sy.num(window.p99Us) / 1000;
    const bound = config.max_p99_ms;
    return [
      sy.finding({
        key: 'p99',
        active: p99Ms > bound,
        value: p99Ms,
        threshold: bound,
        summary: `p99 is ${p99Ms.toFixed(0)} ms (bound ${bound} ms)`,
        severity: 'high',
      }),
    ];
  },
};
