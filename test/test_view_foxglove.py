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

from dig2dig_ros.view.foxglove_bridge import FoxgloveBridge, array_to_frame  # noqa: E402

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


def decode_compressed_image(payload: bytes) -> dict:
    """foxglove.CompressedImage (protobuf: timestamp 1, data 2, format 3, frame_id 4) → {stamp_ns, ...}."""
    f = _protobuf_fields(payload)
    stamp = _protobuf_fields(f[1][0]) if 1 in f else {}
    return {"stamp_ns": stamp.get(1, [0])[0] * 10**9 + stamp.get(2, [0])[0], "data": f.get(2, [b""])[0],
            "format": f.get(3, [b""])[0].decode(), "frame_id": f.get(4, [b""])[0].decode()}


def _feed_when_watched(bridge, topics, feed):
    """An `until` for FoxgloveClient.collect: feed once the bridge sees the subscriptions, until each got one."""
    def until(got):
        if not bridge.watched() >= set(topics):
            time.sleep(0.05)
            return False
        feed()
        time.sleep(0.05)
        return all(got[t] for t in topics)
    return until


def test_compressed_topics_reach_foxglove_as_compressed_image_or_decoded():
    """A sensor_msgs/CompressedImage goes out as foxglove.CompressedImage with its bytes as received; on a channel
    advertised as RawImage it is decoded (the review found every compressed message dropped and only counted)."""
    pytest.importorskip("sensor_msgs")
    import cv2
    from sensor_msgs.msg import CompressedImage

    from dig2dig_ros.view.ros_common import message_to_frame

    scene = np.random.default_rng(1).integers(0, 255, (24, 32, 3), dtype=np.uint8)
    jpeg = CompressedImage(format="bgr8; jpeg compressed bgr8")  # image_transport's format string
    jpeg.data = cv2.imencode(".jpg", scene)[1].tobytes()
    jpeg.header.stamp.sec, jpeg.header.stamp.nanosec, jpeg.header.frame_id = 77, 5, "cam"
    gray = scene[..., 1].copy()
    png = CompressedImage(format="png")
    png.data = cv2.imencode(".png", gray)[1].tobytes()
    topics = ["/cam/image/compressed", "/thermal/image"]
    bridge = FoxgloveBridge(topics, port=0, convert=message_to_frame, compressed=["/cam/image/compressed"],
                            diagnostics=False).start()
    try:
        def feed():
            bridge.put_image(topics[0], jpeg, 77 * 10**9 + 5, "cam")
            bridge.put_image(topics[1], png, 78 * 10**9, "ir")

        got = FoxgloveClient(bridge.port).collect(topics, _feed_when_watched(bridge, topics, feed), timeout=15)
    finally:
        bridge.stop()
    assert bridge.errors == 0, bridge.last_failure
    compressed = decode_compressed_image(got[topics[0]][0])
    assert (compressed["stamp_ns"], compressed["frame_id"], compressed["format"]) == (77 * 10**9 + 5, "cam", "jpeg")
    assert compressed["data"] == bytes(jpeg.data)  # as received: nothing decoded or re-encoded
    raw = decode_raw_image(got[topics[1]][0])
    assert (raw["encoding"], raw["width"], raw["height"], raw["step"]) == ("mono8", 32, 24, 32)
    assert np.array_equal(np.frombuffer(raw["data"], np.uint8).reshape(24, 32), gray)  # PNG is lossless


class _FakeChannel:
    """Stands in for an SDK channel: always watched; `log` records, or raises `fail` once."""

    def __init__(self, fail: Exception | None = None) -> None:
        self.fail, self.logged = fail, []

    def has_sinks(self) -> bool:
        return True

    def log(self, message) -> None:
        if self.fail is not None:
            failure, self.fail = self.fail, None
            raise failure
        self.logged.append(message)


def _wait(predicate, timeout: float = 5.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end and not predicate():
        time.sleep(0.02)
    return predicate()


def test_a_failing_message_is_counted_logged_and_the_sender_goes_on():
    lines = []

    def convert(payload, compressed):
        if payload == "bad":
            raise ValueError("cannot show encoding 'yuv9'")
        return array_to_frame(payload, compressed)

    bridge = FoxgloveBridge(["/fused/image"], port=0, convert=convert, log=lines.append).start()
    try:
        bridge._diag_channel = _FakeChannel(fail=RuntimeError("diagnostics value not JSON"))
        bridge._channels["/fused/image"] = image_channel = _FakeChannel()
        bridge.put_diagnostics({"status": []})
        assert _wait(lambda: bridge.failed["/diagnostics"] == 1)
        bridge.put_image("/fused/image", "bad", 1)
        assert _wait(lambda: bridge.failed["/fused/image"] == 1)
        bridge.put_image("/fused/image", (np.zeros((2, 3), np.uint8), "mono8"), 2)
        bridge.put_diagnostics({"status": []})
        assert _wait(lambda: image_channel.logged and bridge._diag_channel.logged), "the sender thread stopped"
        assert bridge.alive() and bridge.sent["/fused/image"] == 1 and bridge.errors == 2
    finally:
        bridge.stop()
    assert "RuntimeError: diagnostics value not JSON" in bridge.last_failure["/diagnostics"]
    assert any("/fused/image" in line and "yuv9" in line for line in lines), lines
    assert any("/diagnostics" in line and "not JSON" in line for line in lines), lines


@pytest.mark.parametrize(("ros_format", "shown"), [
    ("jpeg", "jpeg"), ("JPG", "jpeg"), ("png", "png"), ("bgr8; jpeg compressed bgr8", "jpeg"),
    ("mono16; png compressed mono16", "png"), ("rgb8; compressed png", "png"), ("webp", "webp"),
    ("16UC1; compressedDepth png", None), ("", None), ("tiff", None)])
def test_ros_compressed_formats_map_to_the_formats_foxglove_shows(ros_format, shown):
    from dig2dig_ros.view.foxglove_bridge import foxglove_format

    assert foxglove_format(ros_format) == shown
