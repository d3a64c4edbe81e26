// The Switchyard plugin SDK for JavaScript.
//
// Helpers over the bindings componentize-js generates from the plugin
// contract (`wit/plugins.wit`, package `switchyard:plugins@0.2.0`): the
// plugin's config, the proxy's log, constructors for the records a plugin
// returns with the contract's defaults, a seeded random generator, and state
// as JSON. Every record field is documented in `wit/plugins.wit`.
//
// A plugin is an ES module (`app.js`) that exports one object named after
// its kind's interface: `alert` (world `alert-rule`), `optimize` (world
// `optimizer`) or `generate` (world `operation-generator`). Its methods are
// the interface's functions in camelCase (`nextBatch`, `saveState`), and so
// are record fields (`p99Us`, `forMs`). `build.mjs` turns it into a
// component with componentize-js's Node API, with the `http` and
// `fetch-event` features off: Switchyard grants no network.
//
// How the contract's types arrive in JavaScript:
// - u64 and s64 are BigInt (`snapshot.current.requests`); use `num()` to
//   get a Number. u32 and smaller are Numbers.
// - an enum is its case name as a string (`'high'`, `'create'`).
// - a variant is `{ tag: 'concurrency-limit', val: 200 }`.
// - an option is the value or `undefined`; `list<u8>` is a Uint8Array.
// - `init` refuses a config by throwing a string (what `jsonConfig` does).
//
// Plugins see only their inputs: clocks and random numbers, no files,
// environment or sockets. An exception from any other call traps the
// plugin; the proxy counts the failure and carries on without it.

import { log as hostLog } from 'switchyard:plugins/host@0.2.0';

/** The plugin's config string (its `config` table, as JSON) over
 * `defaults`. An empty config gives the defaults; bad JSON, a value that is
 * not an object, or a key `defaults` lacks refuses the config, with a
 * reason the proxy reports at load. */
export function jsonConfig(plugin, config, defaults) {
  if (!config.trim()) return { ...defaults };
  let value;
  try {
    value = JSON.parse(config);
  } catch (e) {
    throw `${plugin}: config is not JSON: ${e.message}`;
  }
  if (value === null || typeof value !== 'object' || Array.isArray(value)) {
    throw `${plugin}: config must be a JSON object, got ${config}`;
  }
  const known = Object.keys(defaults).sort();
  const unknown = Object.keys(value).filter((k) => !(k in defaults)).sort();
  if (unknown.length) {
    throw `${plugin}: unknown config key(s) ${unknown.join(', ')} (known: ${known.join(', ')})`;
  }
  return { ...defaults, ...value };
}

/** Writes to the proxy's log, tagged with the plugin's name (and shown by
 * `switchyard plugin test` under `logs`). */
export const log = {
  debug: (message) => hostLog('debug', String(message)),
  info: (message) => hostLog('info', String(message)),
  warn: (message) => hostLog('warn', String(message)),
  error: (message) => hostLog('error', String(message)),
};

/** A u64 (BigInt) or any number as a Number. */
export const num = (value) => Number(value);

/** Errors / requests of a window; 0 when it had no requests. */
export function errorRate(window) {
  return window.requests ? num(window.errors) / num(window.requests) : 0;
}

// Alert rules.

/** What a rule says of itself: a finding must stay active `forMs` before
 * its alert fires, which keeps firing `keepFiringForMs` after it clears. */
export function ruleMeta(name, description, { forMs = 0, keepFiringForMs = 0 } = {}) {
  return { name, description, forMs, keepFiringForMs };
}

/** One finding: severity `'high'` unless given (`'info'`, `'low'`,
 * `'medium'`, `'high'`, `'critical'`); `labels` as an object. */
export function finding({ key, active, value, threshold, summary, severity = 'high', labels = {} }) {
  return {
    key,
    active: Boolean(active),
    severity,
    value: Number(value),
    threshold: Number(threshold),
    labels: Object.entries(labels).map(([k, v]) => ({ key: k, value: String(v) })),
    summary,
  };
}

// Optimizers.

/** An adjustment of the admission concurrency limit. */
export const concurrencyLimit = (limit) => ({ tag: 'concurrency-limit', val: Math.trunc(limit) });

/** An adjustment of one backend's weight (`backend` as in a backend's
 * `id`, `upstream/address`). */
export const backendWeight = (backend, weight) => ({
  tag: 'backend-weight',
  val: { backend, weight: Math.trunc(weight) },
});

/** An adjustment of the response cache's capacity. */
export const cacheCapacityBytes = (capacity) => ({
  tag: 'cache-capacity-bytes',
  val: BigInt(Math.trunc(num(capacity))),
});

/** What an optimizer decided; `state` (bytes, see `saveJson`) comes back on
 * the next call, and across a hot swap. */
export function decision(adjustments, reason, state = new Uint8Array()) {
  return { adjustments, reason, state };
}

/** A value as state bytes, and back (`undefined` or empty bytes give
 * `fallback`). */
export const saveJson = (value) => new TextEncoder().encode(JSON.stringify(value));
export function loadJson(bytes, fallback) {
  return bytes && bytes.length ? JSON.parse(new TextDecoder().decode(bytes)) : fallback;
}

// Operation generators.

const IDEMPOTENT = new Set(['GET', 'HEAD', 'PUT', 'DELETE', 'OPTIONS']);

/** One request for the load generator; `kind` is `'create'`, `'read'`,
 * `'update'`, `'delete'` or `'custom'`. GET, HEAD, PUT, DELETE and OPTIONS
 * count as idempotent (may be retried). `body` is a string, bytes or a
 * value sent as JSON; `captureJsonField` names the field of a JSON answer
 * that holds a created entity's id. */
export function operation(kind, method, path, { body, headers = {}, name = '', captureJsonField } = {}) {
  method = method.toUpperCase();
  const pairs = Object.entries(headers).map(([n, v]) => ({ name: n, value: String(v) }));
  let bytes;
  if (body !== undefined) {
    if (body instanceof Uint8Array) bytes = body;
    else bytes = new TextEncoder().encode(typeof body === 'string' ? body : JSON.stringify(body));
    if (!pairs.some((h) => h.name.toLowerCase() === 'content-type')) {
      pairs.push({ name: 'content-type', value: 'application/json' });
    }
  }
  return {
    kind,
    name,
    method,
    path,
    headers: pairs,
    body: bytes,
    idempotent: IDEMPOTENT.has(method),
    captureId: captureJsonField ? { tag: 'json-field', val: captureJsonField } : undefined,
  };
}

/** A bodiless GET. */
export const get = (kind, path) => operation(kind, 'GET', path);

/** A small seeded generator (xorshift32): the same seed gives the same
 * operations, which `switchyard bench --seed` relies on. */
export class Rng {
  constructor(seed) {
    this.s = Number(BigInt.asUintN(32, BigInt(seed))) || 0x9e3779b9;
  }
  /** A float in [0, 1). */
  next() {
    let x = this.s;
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    this.s = x >>> 0;
    return this.s / 4294967296;
  }
  /** One element of a non-empty array. */
  choice(items) {
    return items[Math.floor(this.next() * items.length)];
  }
}
