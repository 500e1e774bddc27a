"""The Foxglove bridge without ROS: a WebSocket client (the Foxglove protocol, as the app speaks it) subscribes to
a channel and decodes the RawImage it gets; newest-wins hand-over; channels nobody watches cost nothing.

`FoxgloveClient` and `decode_raw_image` are used by test_view_graph.py too.
"""

from __future__ import annotations

import asyncio
import json
import struct
import time

import numpy as np
import pytest

pytest.importorskip("foxglove")
websockets = pytest.importorskip("websockets")

from dig2dig_ros.view.foxglove_bridge import FoxgloveBridge  # noqa: E402

SUBPROTOCOLS = ["foxglove.sdk.v1", "foxglove.websocket.v1"]


def _protobuf_fields(data: bytes) -> dict[int, list]:
    """A minimal protobuf wire-format reader: field number → values (ints, or bytes for length-delimited)."""
    fields: dict[int, list] = {}
    i = 0

    def varint() -> int:
        nonlocal i
        shift = value = 0
        while True:
            byte = data[i]
            i += 1
            value |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                return value

    while i < len(data):
        key = varint()
        number, wire = key >> 3, key & 7
        if wire == 0:
            value = varint()
        elif wire == 1:
            value, i = struct.unpack_from("<Q", data, i)[0], i + 8
        elif wire == 2:
            size = varint()
            value, i = data[i:i + size], i + size
        elif wire == 5:
            value, i = struct.unpack_from("<I", data, i)[0], i + 4
        else:
            raise ValueError(f"wire type {wire}")
        fields.setdefault(number, []).append(value)
    return fields


def decode_raw_image(payload: bytes) -> dict:
    """foxglove.RawImage (protobuf) → {stamp_ns, frame_id, width, height, encoding, step, data}."""
    f = _protobuf_fields(payload)
    stamp = _protobuf_fields(f[1][0]) if 1 in f else {}
    return {"stamp_ns": stamp.get(1, [0])[0] * 10**9 + stamp.get(2, [0])[0],
            "width": f.get(2, [0])[0], "height": f.get(3, [0])[0], "encoding": f.get(4, [b""])[0].decode(),
            "step": f.get(5, [0])[0], "data": f.get(6, [b""])[0], "frame_id": f.get(7, [b""])[0].decode()}


class FoxgloveClient:
    """Connects, reads the advertised channels, subscribes to some and returns their messages (blocking API)."""

    def __init__(self, port: int, host: str = "127.0.0.1") -> None:
        self.url = f"ws://{host}:{port}"

    def collect(self, topics: list[str], until, timeout: float = 30.0) -> dict[str, list[bytes]]:
        """Subscribe to `topics` (waiting for them to be advertised); collect payloads until `until(got)` holds."""
        return asyncio.run(self._collect(topics, until, timeout))

    async def _collect(self, topics, until, timeout):
        got: dict[str, list[bytes]] = {t: [] for t in topics}
        deadline = time.monotonic() + timeout
        async with websockets.connect(self.url, subprotocols=SUBPROTOCOLS, max_size=64 * 2**20) as ws:
            channels: dict[str, int] = {}
            while set(topics) - set(channels):
                msg = await asyncio.wait_for(ws.recv(), max(0.1, deadline - time.monotonic()))
                if isinstance(msg, str) and json.loads(msg)["op"] == "advertise":
                    channels.update({c["topic"]: c["id"] for c in json.loads(msg)["channels"]})
            by_sub = dict(enumerate(topics, start=1))
            await ws.send(json.dumps({"op": "subscribe", "subscriptions": [
                {"id": sub, "channelId": channels[topic]} for sub, topic in by_sub.items()]}))
            while not until(got) and time.monotonic() < deadline:
                try:  # a short wait: `until` may still be waiting for the bridge to see the subscription
                    msg = await asyncio.wait_for(ws.recv(), 0.2)
                except TimeoutError:
                    continue
                if isinstance(msg, bytes) and msg[0] == 1:  # opcode 1: message data
                    sub = struct.unpack_from("<I", msg, 1)[0]
                    got[by_sub[sub]].append(msg[13:])  # after opcode, subscription id, receive time
        return got


@pytest.fixture()
def bridge():
    b = FoxgloveBridge(["/fused/image", "/fused/dig/ir"], port=0).start()
    yield b
    b.stop()


def test_a_subscribed_client_decodes_the_image_with_its_stamp_and_size(bridge):
    weights = np.linspace(0, 1, 6 * 4, dtype=np.float32).reshape(4, 6)
    fused = np.random.default_rng(0).integers(0, 255, (4, 6, 3), dtype=np.uint8)

    def feed_until(got):
        if not bridge.watched() >= {"/fused/image", "/fused/dig/ir"}:
            time.sleep(0.05)
            return False
        bridge.put_image("/fused/image", (fused, "bgr8"), 1234 * 10**9 + 56, "cam")
        bridge.put_image("/fused/dig/ir", (weights, "32FC1"), 1234 * 10**9 + 56, "cam")
        bridge.put_diagnostics({"header": {"stamp": {"sec": 1, "nsec": 0}, "frame_id": ""}, "status": []})
        time.sleep(0.05)
        return all(got.values())

    got = FoxgloveClient(bridge.port).collect(["/fused/image", "/fused/dig/ir", "/diagnostics"], feed_until)
    image = decode_raw_image(got["/fused/image"][0])
    assert (image["stamp_ns"], image["frame_id"], image["encoding"]) == (1234 * 10**9 + 56, "cam", "bgr8")
    assert (image["width"], image["height"], image["step"]) == (6, 4, 18)
    assert np.array_equal(np.frombuffer(image["data"], np.uint8).reshape(4, 6, 3), fused)
    weight = decode_raw_image(got["/fused/dig/ir"][0])
    assert weight["encoding"] == "32FC1" and weight["step"] == 24
    assert np.allclose(np.frombuffer(weight["data"], "<f4").reshape(4, 6), weights)
    assert json.loads(got["/diagnostics"][0])["status"] == []


def test_unwatched_channels_send_nothing_and_puts_never_wait(bridge):
    big = np.zeros((1024, 1280, 3), np.uint8)
    start = time.perf_counter()
    for i in range(200):
        bridge.put_image("/fused/image", (big, "bgr8"), i)
    assert (time.perf_counter() - start) / 200 < 0.01  # a put that waited on a viewer would take far longer
    time.sleep(0.2)
    assert bridge.watched() == set() and bridge.sent["/fused/image"] == 0
