// PLUGIN_NAME: an operation generator for `switchyard bench`. Creates items
// with `POST {resource}` (a `write_share` of the operations, and always
// first), and reads back the ones it created with `GET {resource}/{id}`,
// the id taken from the `id` field of each create's JSON answer. The ids
// survive a hot swap: `saveState` hands them to the next version.
//
// Config (JSON, every key optional): {"resource": "/items", "write_share": 0.2}.

import * as sy from './switchyard_sdk.js';

const DEFAULTS = { resource: '/items', write_share: 0.2 };
// Ids remembered, at most.
const MAX_IDS = 10_000;

let config = { ...DEFAULTS };
let ids = [];
let created = 0;
let rng = new sy.Rng(0);

export const generate = {
  init(raw, seed, state) {
    config = sy.jsonConfig('PLUGIN_NAME', raw, DEFAULTS);
    ({ ids, created } = sy.loadJson(state, { ids: [], created: 0 }));
    rng = new sy.Rng(seed);
  },

  nextBatch(ctx, max) {
    const resource = config.resource.replace(/\/+$/, '');
    const ops = [];
    for (let i = 0; i < max; i++) {
      if (!ids.length || rng.next() < config.write_share) {
        created += 1;
        ops.push(
          sy.operation('create', 'POST', resource, {
            body: { name: `item-${created}` },
            captureJsonField: 'id',
          }),
        );
      } else {
        ops.push(sy.get('read', `${resource}/${rng.choice(ids)}`));
      }
    }
    return ops;
  },

  observe(results) {
    for (const r of results) {
      if (r.createdId !== undefined && ids.length < MAX_IDS) ids.push(r.createdId);
    }
  },

  saveState() {
    return sy.saveJson({ ids, created });
  },
};
