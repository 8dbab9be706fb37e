"""The outgoing header cache (envs/bridge/codec.py): a cached frame is byte for byte the frame encoded afresh,
for every kind of flat message a lock-step loop sends (a step with ``autoreset: true`` included)."""

import numpy as np

from envs.bridge.codec import LENGTH, HeaderCache, decode, encode


def _messages():
    acts = np.arange(6, dtype=np.int64).reshape(3, 2)
    return [{"type": "step", "actions": acts},
            {"type": "step", "actions": acts + 1, "autoreset": True},
            {"type": "step", "actions": acts, "autoreset": False},
            {"type": "step", "actions": acts, "instances": [0, 2]}]  # a list: not flat, never cached


def test_a_cached_frame_is_the_fresh_frame_and_scalar_fields_are_cached_by_value():
    cache = HeaderCache()
    for _ in range(3):  # the first round fills the cache, the next two read it
        for msg in _messages():
            frame = encode(msg, cache)
            assert frame == encode(msg)
            body = decode(frame[LENGTH.size:])
            assert np.array_equal(body["actions"], msg["actions"])
            assert body.get("autoreset") == msg.get("autoreset")
    assert len(cache.out) == 3  # plain, autoreset true, autoreset false; the list-bearing one is not kept
    on, off = encode(_messages()[1], cache), encode({**_messages()[1], "autoreset": False}, cache)
    assert on != off
