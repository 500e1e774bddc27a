"""rosbag2 files without ROS: image pairs (or the shipped sample scene) to a bag, and bags read back.

Bags are rosbag2 version 9 (sqlite3 or mcap) written with `rosbags`; messages are CDR-serialised with its
ROS 2 Jazzy typestore, so `ros2 bag play`, our `dig2dig-ros play` and independent readers all replay them.

    dig2dig-ros bag-from-images --ir DIR --vis DIR --out BAG [--rate HZ] [--storage sqlite3|mcap]
                                [--frame-id-ir ir_camera] [--frame-id-vis visible_camera] [--limit N]
                                [--vis-offset SECONDS] [--start SECONDS]

Pairs are matched by filename stem. IR becomes mono8 (3-channel gray JPEGs included) or mono16 (16-bit
files); visible becomes bgr8 (mono8 / mono16 when the file is single-channel). Both images of a pair share
one stamp, which is also the bag's receive time. Errors are one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime
from rosbags.rosbag2 import Reader, StoragePlugin, Writer, WriterError
from rosbags.typesys import Stores, get_typestore

from dig2dig_ros.core.frame import imaging
from dig2dig_ros.core.sample_scene import make_sample_pair

IMAGE_TYPE = "sensor_msgs/msg/Image"
IR_TOPIC = "/ir/image"
VIS_TOPIC = "/visible/image"
STORAGES = ("sqlite3", "mcap")
_ZERO = QosTime(0, 0)  # rmw "unspecified": infinite deadline, lifespan and lease
RELIABLE_QOS = Qos(QosHistory.KEEP_LAST, 10, QosReliability.RELIABLE, QosDurability.VOLATILE, _ZERO, _ZERO,
                   QosLiveliness.AUTOMATIC, _ZERO, False)
"""Offered QoS written for image topics: reliable publishers match reliable and best-effort subscribers."""


# encoding -> (numpy type code, channels), the layouts image topics carry
_PIXEL_LAYOUT = {
    "mono8": ("u1", 1), "8UC1": ("u1", 1), "mono16": ("u2", 1), "16UC1": ("u2", 1),
    "bgr8": ("u1", 3), "rgb8": ("u1", 3), "8UC3": ("u1", 3), "bgra8": ("u1", 4), "rgba8": ("u1", 4),
    "8UC4": ("u1", 4), "32FC1": ("f4", 1),
}


class BagError(RuntimeError):
    """A bag that cannot be written or read (missing, truncated, corrupt, unsupported); one-line message."""


@dataclass(frozen=True)
class BagMessage:
    """One message as stored: topic, type, receive time (ns) and the raw CDR bytes."""

    topic: str
    msgtype: str
    timestamp: int
    raw: bytes


@dataclass(frozen=True)
class BagTopic:
    """A topic of a bag: type, message count and the offered QoS profiles recorded with it."""

    name: str
    msgtype: str
    count: int
    qos: tuple[Qos, ...]


@dataclass(frozen=True)
class ImageRecord:
    """A decoded image message: topic, receive time, header stamp (ns), frame id, encoding and pixels."""

    topic: str
    timestamp: int
    stamp_ns: int
    frame_id: str
    encoding: str
    image: np.ndarray


@cache
def typestore() -> Any:
    """The rosbags typestore for ROS 2 Jazzy message definitions."""
    return get_typestore(Stores.ROS2_JAZZY)


def ir_pixels(img: np.ndarray) -> tuple[np.ndarray, str]:
    """An infrared image as (H,W) pixels and its encoding: mono8, or mono16 for 16-bit images."""
    if img.ndim == 3:
        img = img[..., 0] if not imaging.is_colour(img) else cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
    if img.dtype == np.uint8:
        return np.ascontiguousarray(img), "mono8"
    if img.dtype == np.uint16:
        return np.ascontiguousarray(img), "mono16"
    raise BagError(f"unsupported infrared pixel type {img.dtype} (expected 8- or 16-bit)")


def visible_pixels(img: np.ndarray) -> tuple[np.ndarray, str]:
    """A visible image as pixels and its encoding: bgr8 for 3-channel 8-bit, mono8 / mono16 for 1-channel."""
    if img.ndim == 3 and img.dtype == np.uint8:
        return np.ascontiguousarray(img), "bgr8"
    if img.ndim == 3 and img.dtype == np.uint16:
        return np.ascontiguousarray((img // 257).astype(np.uint8)), "bgr8"
    if img.ndim == 2 and img.dtype in (np.uint8, np.uint16):
        return np.ascontiguousarray(img), "mono8" if img.dtype == np.uint8 else "mono16"
    raise BagError(f"unsupported visible image: shape {img.shape}, pixel type {img.dtype}")


def serialize_image(pixels: np.ndarray, encoding: str, stamp_ns: int, frame_id: str) -> bytes:
    """A sensor_msgs/msg/Image with the given pixels (little-endian, unpadded rows) as CDR bytes."""
    store = typestore()
    types = store.types
    pixels = np.ascontiguousarray(pixels)
    if pixels.dtype.itemsize > 1:
        pixels = pixels.astype(pixels.dtype.newbyteorder("<"), copy=False)
    h, w = pixels.shape[:2]
    header = types["std_msgs/msg/Header"](
        stamp=types["builtin_interfaces/msg/Time"](sec=stamp_ns // 10**9, nanosec=stamp_ns % 10**9),
        frame_id=frame_id,
    )
    msg = types[IMAGE_TYPE](
        header=header, height=h, width=w, encoding=encoding, is_bigendian=0,
        step=pixels.strides[0], data=pixels.reshape(-1).view(np.uint8),
    )
    return bytes(store.serialize_cdr(msg, IMAGE_TYPE))


def deserialize_image(raw: bytes | memoryview) -> tuple[int, str, str, np.ndarray]:
    """CDR bytes of a sensor_msgs/msg/Image → (stamp ns, frame id, encoding, pixels (H,W) or (H,W,C))."""
    msg = typestore().deserialize_cdr(raw, IMAGE_TYPE)
    stamp_ns = msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec
    if msg.encoding not in _PIXEL_LAYOUT:
        raise BagError(f"unsupported image encoding {msg.encoding!r}; supported: {', '.join(_PIXEL_LAYOUT)}")
    code, channels = _PIXEL_LAYOUT[msg.encoding]
    dtype = np.dtype(code).newbyteorder(">" if msg.is_bigendian else "<")
    row = msg.width * channels * dtype.itemsize
    data = np.asarray(msg.data, dtype=np.uint8).reshape(-1)
    if msg.step < row or data.size < msg.step * msg.height:
        raise BagError(f"image message of {msg.width}x{msg.height} {msg.encoding} has too little data")
    rows = np.ascontiguousarray(data[: msg.step * msg.height].reshape(msg.height, msg.step)[:, :row])
    pixels = rows.view(dtype).astype(dtype.newbyteorder("="))
    shape = (msg.height, msg.width) if channels == 1 else (msg.height, msg.width, channels)
    return stamp_ns, msg.header.frame_id, msg.encoding, pixels.reshape(shape)


def image_pairs(ir_dir: str | Path, vis_dir: str | Path) -> list[tuple[str, Path, Path]]:
    """(stem, ir file, visible file) for every stem present in both folders, sorted by stem."""
    found = []
    for folder in (Path(ir_dir), Path(vis_dir)):
        if not folder.is_dir():
            raise BagError(f"{folder} is not a folder")
        found.append({p.stem: p for p in folder.iterdir() if p.suffix.lower() in imaging.IMAGE_SUFFIXES})
    ir, vis = found
    stems = sorted(ir.keys() & vis.keys())
    if not stems:
        raise BagError(f"no image pairs: no filename stem is in both {ir_dir} and {vis_dir}")
    return [(s, ir[s], vis[s]) for s in stems]


def _storage(storage: str) -> StoragePlugin:
    if storage not in STORAGES:
        raise BagError(f"unknown storage {storage!r}; expected one of {', '.join(STORAGES)}")
    return StoragePlugin.SQLITE3 if storage == "sqlite3" else StoragePlugin.MCAP


def write_image_bag(
    out: str | Path,
    pairs: Iterable[tuple[np.ndarray, np.ndarray]],
    *,
    rate: float = 10.0,
    storage: str = "sqlite3",
    frame_id_ir: str = "ir_camera",
    frame_id_vis: str = "visible_camera",
    start_ns: int | None = None,
    vis_offset: float = 0.0,
) -> int:
    """Write (ir, visible) image pairs as /ir/image and /visible/image at `rate` Hz; returns pairs written.

    Pair k is stamped start + k/rate (start: now, whole seconds, when None); the visible stamp is shifted by
    `vis_offset` seconds to simulate unsynchronised cameras. Raises BagError (existing output included).
    """
    if not rate > 0:
        raise BagError(f"rate must be positive, got {rate}")
    plugin = _storage(storage)
    start = int(time.time()) * 10**9 if start_ns is None else int(start_ns)
    offset = round(vis_offset * 1e9)
    if start + min(offset, 0) < 0:
        raise BagError("stamps would be negative; use a later start or a smaller offset")
    out = Path(out)
    if out.exists():
        raise BagError(f"{out} exists already; choose a new output path")
    count = 0
    try:
        with Writer(out, version=9, storage_plugin=plugin) as writer:
            store, qos = typestore(), [RELIABLE_QOS]
            ir_conn = writer.add_connection(IR_TOPIC, IMAGE_TYPE, typestore=store, offered_qos_profiles=qos)
            vis_conn = writer.add_connection(VIS_TOPIC, IMAGE_TYPE, typestore=store, offered_qos_profiles=qos)
            for ir, vis in pairs:
                stamp = start + round(count * 1e9 / rate)
                ir_px, ir_enc = ir_pixels(ir)
                vis_px, vis_enc = visible_pixels(vis)
                messages = [
                    (stamp, ir_conn, serialize_image(ir_px, ir_enc, stamp, frame_id_ir)),
                    (stamp + offset, vis_conn, serialize_image(vis_px, vis_enc, stamp + offset, frame_id_vis)),
                ]
                for t, conn, raw in sorted(messages, key=lambda m: m[0]):
                    writer.write(conn, t, raw)
                count += 1
    except BaseException as exc:
        shutil.rmtree(out, ignore_errors=True)  # ours: it did not exist before; no half-written bag is left
        if isinstance(exc, WriterError | OSError):
            raise BagError(f"cannot write bag {out}: {_one_line(exc)}") from None
        raise
    return count


def bag_from_images(
    ir_dir: str | Path, vis_dir: str | Path, out: str | Path, *, limit: int = 0, **options: Any
) -> int:
    """Write the image pairs of two folders (matched by stem, first `limit` if > 0) to a bag; returns pairs."""
    pairs = image_pairs(ir_dir, vis_dir)
    if limit > 0:
        pairs = pairs[:limit]

    def load() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for stem, ir_path, vis_path in pairs:
            ir, vis = imaging.read_image(ir_path), imaging.read_image(vis_path)
            if ir.shape[:2] != vis.shape[:2]:
                raise BagError(f"pair {stem}: sizes differ ({ir.shape[1]}x{ir.shape[0]} vs "
                               f"{vis.shape[1]}x{vis.shape[0]})")
            yield ir, vis

    return write_image_bag(out, load(), **options)


def write_sample_bag(
    out: str | Path, frames: int = 30, rate: float = 10.0, storage: str = "sqlite3", **options: Any
) -> int:
    """Write the shipped synthetic night street (make_sample_pair(0..frames-1)) to a bag; returns pairs."""
    if frames < 1:
        raise BagError(f"frames must be at least 1, got {frames}")
    return write_image_bag(out, (make_sample_pair(k) for k in range(frames)), rate=rate, storage=storage, **options)


def _reader(path: str | Path) -> Reader:
    path = Path(path)
    if not path.exists():
        raise BagError(f"cannot read bag {path}: no such file or folder")
    try:
        reader = Reader(path)
        reader.open()
    except Exception as exc:  # rosbags, sqlite (apsw), yaml and OS errors alike: all mean an unreadable bag
        raise BagError(f"cannot read bag {path}: {_one_line(exc)} (truncated, corrupt or not a rosbag2?)") from None
    return reader


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def bag_topics(path: str | Path) -> list[BagTopic]:
    """The topics of a bag with their types, counts and offered QoS; raises BagError when unreadable."""
    reader = _reader(path)
    try:
        topics = []
        for conn in reader.connections:
            qos = tuple(getattr(conn.ext, "offered_qos_profiles", ()) or ())
            topics.append(BagTopic(conn.topic, conn.msgtype, conn.msgcount, qos))
        return topics
    finally:
        reader.close()


def read_messages(path: str | Path, topics: Sequence[str] = ()) -> Iterator[BagMessage]:
    """The bag's messages in receive-time order (only `topics` when given); raises BagError on corrupt data."""
    reader = _reader(path)
    try:
        wanted = {t.lstrip("/") for t in topics}
        conns = [c for c in reader.connections if not wanted or c.topic.lstrip("/") in wanted]
        if wanted and not conns:
            have = ", ".join(sorted({c.topic for c in reader.connections})) or "none"
            raise BagError(f"bag {path} has none of the topics {', '.join(topics)} (it has: {have})")
        messages = reader.messages(connections=conns)
        while True:
            try:
                conn, timestamp, raw = next(messages)
            except StopIteration:
                return
            except Exception as exc:  # a damaged page or chunk surfaces only while iterating
                raise BagError(f"cannot read bag {path}: {_one_line(exc)} (truncated or corrupt?)") from None
            yield BagMessage(conn.topic, conn.msgtype, timestamp, bytes(raw))
    finally:
        reader.close()


def read_images(path: str | Path, topics: Sequence[str] = ()) -> Iterator[ImageRecord]:
    """The bag's sensor_msgs/msg/Image messages decoded, in receive-time order; other types raise BagError."""
    for m in read_messages(path, topics):
        if m.msgtype != IMAGE_TYPE:
            raise BagError(f"topic {m.topic} has type {m.msgtype}, not {IMAGE_TYPE}")
        try:
            stamp, frame_id, encoding, pixels = deserialize_image(m.raw)
        except BagError:
            raise
        except Exception as exc:  # malformed CDR
            raise BagError(f"cannot decode an image on {m.topic}: {_one_line(exc)}") from None
        yield ImageRecord(m.topic, m.timestamp, stamp, frame_id, encoding, pixels)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `bag-from-images`."""
    parser.add_argument("--ir", required=True, help="folder of infrared images")
    parser.add_argument("--vis", required=True, help="folder of visible images (same filename stems)")
    parser.add_argument("--out", required=True, help="bag folder to create (must not exist)")
    parser.add_argument("--rate", type=float, default=10.0, help="pairs per second (default 10)")
    parser.add_argument("--storage", choices=STORAGES, default="sqlite3")
    parser.add_argument("--frame-id-ir", default="ir_camera")
    parser.add_argument("--frame-id-vis", default="visible_camera")
    parser.add_argument("--limit", type=int, default=0, help="first N pairs only (0: all)")
    parser.add_argument("--vis-offset", type=float, default=0.0,
                        help="shift visible stamps by this many seconds (simulates unsynchronised cameras)")
    parser.add_argument("--start", type=float, default=None, help="stamp of the first pair, seconds (default now)")


def main(argv: list[str] | None = None) -> int:
    """`bag-from-images`: write a rosbag2 of infrared/visible image pairs."""
    parser = argparse.ArgumentParser(prog="dig2dig-ros bag-from-images", description=__doc__.splitlines()[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    start = None if args.start is None else round(args.start * 1e9)
    try:
        n = bag_from_images(args.ir, args.vis, args.out, limit=args.limit, rate=args.rate, storage=args.storage,
                            frame_id_ir=args.frame_id_ir, frame_id_vis=args.frame_id_vis, start_ns=start,
                            vis_offset=args.vis_offset)
    except (BagError, imaging.ImageError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {n} pairs ({2 * n} messages on {IR_TOPIC}, {VIS_TOPIC}) at {args.rate:g} Hz to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
