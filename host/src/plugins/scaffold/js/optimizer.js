// PLUGIN_NAME: an optimizer. Lowers the concurrency limit by a tenth while
// the p99 latency is above `target_p99_ms`, and raises it by 10 while it is
// below, within `min_limit`..`max_limit` (the proxy holds every change to
// its `[optimizer.bounds]` as well).
//
// Config (JSON, every key optional):
// {"target_p99_ms": 100, "min_limit": 10, "max_limit": 1000, "min_requests": 20}.

import * as sy from './switchyard_sdk.js';

const DEFAULTS = { target_p99_ms: 100, min_limit: 10, max_limit: 1000, min_requests: 20 };
let config = { ...DEFAULTS };

export const optimize = {
  init(raw) {
    config = sy.jsonConfig('PLUGIN_NAME', raw, DEFAULTS);
    const { min_limit: low, max_limit: high } = config;
    if (!(0 < low && low <= high)) {
      throw `need 0 < min_limit <= max_limit, got ${low}..${high}`;
    }
  },

  decide(snapshot, saved) {
    // Kept by the proxy between decisions, and across a hot swap.
    const st = sy.loadJson(saved, { decisions: 0 });
    st.decisions += 1;
    const state = sy.saveJson(st);
    // 0: no limit in force yet; start from the top.
    const limit = snapshot.concurrencyLimit || config.max_limit;
    const window = snapshot.current;
    if (sy.num(window.requests) < config.min_requests) {
      return sy.decision([], `limit ${limit} kept: ${window.requests} requests`, state);
    }
    const p99Ms = Math.floor(sy.num(window.p99Us) / 1000);
    let next = p99Ms > config.target_p99_ms ? limit - Math.floor(limit / 10) : limit + 10;
    next = Math.max(config.min_limit, Math.min(config.max_limit, next));
    const adjustments = next === limit ? [] : [sy.concurrencyLimit(next)];
    const reason = `p99 ${p99Ms} ms against ${config.target_p99_ms} ms: limit ${limit} -> ${next}`;
    return sy.decision(adjustments, reason, state);
  },
};
