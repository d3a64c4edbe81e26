"""PLUGIN_NAME: an operation generator for `switchyard bench`. Creates
items with `POST {resource}` (a `write_share` of the operations, and always
first), and reads back the ones it created with `GET {resource}/{id}`, the
id taken from the `id` field of each create's JSON answer. The ids survive
a hot swap: `save_state` hands them to the next version.

Config (JSON, every key optional): {"resource": "/items", "write_share": 0.2}.
"""

import json
import random
from typing import List, Optional

import switchyard_sdk as sy
from wit_world import exports
from wit_world.exports.generate import OpKind

DEFAULTS = {"resource": "/items", "write_share": 0.2}
# Ids remembered, at most.
MAX_IDS = 10_000


class State:
    """componentize-py makes a new `Generate` for every call: what lasts
    between calls lives here, at module level."""

    config = dict(DEFAULTS)
    ids: List[str] = []
    created = 0
    rng = random.Random(0)


class Generate(exports.Generate):
    def init(self, config: str, seed: int, state: Optional[bytes]) -> None:
        State.config = sy.json_config("PLUGIN_NAME", config, DEFAULTS)
        saved = json.loads(state) if state else {"ids": [], "created": 0}
        State.ids = saved["ids"]
        State.created = saved["created"]
        State.rng = random.Random(seed)

    def next_batch(self, ctx, max: int) -> List:
        resource = State.config["resource"].rstrip("/")
        ops = []
        for _ in range(max):
            if not State.ids or State.rng.random() < State.config["write_share"]:
                State.created += 1
                body = json.dumps({"name": f"item-{State.created}"}).encode()
                ops.append(
                    sy.operation(OpKind.CREATE, "POST", resource, body=body, capture_json_field="id")
                )
            else:
                ops.append(sy.get(OpKind.READ, f"{resource}/{State.rng.choice(State.ids)}"))
        return ops

    def observe(self, results: List) -> None:
        for r in results:
            if r.created_id is not None and len(State.ids) < MAX_IDS:
                State.ids.append(r.created_id)

    def save_state(self) -> bytes:
        return json.dumps({"ids": State.ids, "created": State.created}).encode()
