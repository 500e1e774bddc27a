"""`record`: write topics of the ROS graph to a rosbag2, storing the serialized messages as received.

    dig2dig-ros record BAG TOPIC[:TYPE] ... [--duration S] [--max-messages N] [--storage sqlite3|mcap]
                       [--ros-args ...]

A topic is subscribed once a publisher for it appears; its type comes from the graph unless given
(`fused/image:sensor_msgs/msg/Image`). The subscription is reliable when every publisher is, best effort
otherwise (like `ros2 bag record`), and the publishers' QoS is stored as the topic's offered QoS. Receive
times come from the node clock (use_sim_time follows /clock). Stops on Ctrl-C / SIGTERM, after --duration
seconds or --max-messages messages in all, closing the bag properly; prints counts per topic.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import get_types_from_msg

from dig2dig_ros.bags.bag import STORAGES, BagError, typestore
from dig2dig_ros.bags.player import init_ros, message_class, split_ros_args


@dataclass
class TopicSpec:
    """A topic to record: its name as given, resolved name, and type (None: taken from the graph)."""

    name: str
    msgtype: str | None = None


def parse_topic(spec: str) -> TopicSpec:
    """'name' or 'name:package/msg/Type' → TopicSpec."""
    name, _, msgtype = spec.partition(":")
    if not name or (msgtype and msgtype.count("/") != 2):
        raise BagError(f"bad topic {spec!r}; expected TOPIC or TOPIC:package/msg/Type")
    return TopicSpec(name, msgtype or None)


def _msg_search_dirs() -> list[Path]:
    prefixes = [p for p in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep) if p] + [sys.prefix]
    return [Path(p) / "share" for p in prefixes]


def ensure_type(msgtype: str) -> None:
    """Make `msgtype` (and the types it uses) known to the typestore, from installed .msg files if needed."""
    store = typestore()
    for _ in range(100):
        try:
            store.generate_msgdef(msgtype, ros_version=2)
            return
        except Exception as exc:  # rosbags' TypesysError names the first unknown type
            missing = next((w.strip("'\".") for w in str(exc).split() if w.count("/") == 2), None)
            if missing is None:
                raise BagError(f"cannot describe message type {msgtype}: {exc}") from None
        pkg, _, name = missing.split("/")
        found = [d / pkg / "msg" / f"{name}.msg" for d in _msg_search_dirs()]
        path = next((p for p in found if p.is_file()), None)
        if path is None:
            raise BagError(f"message type {missing} has no definition here (no {pkg}/msg/{name}.msg installed)")
        store.register(get_types_from_msg(path.read_text(), missing))
    raise BagError(f"cannot describe message type {msgtype}")


def _time(d: Any) -> QosTime:
    sec, nsec = divmod(d.nanoseconds, 10**9)
    return QosTime(0, 0) if d.nanoseconds <= 0 or sec >= 2**31 - 1 else QosTime(sec, nsec)  # 0: infinite


def offered_qos(profile: Any) -> Qos:
    """A publisher's rclpy QoSProfile as a rosbags Qos for the bag's metadata."""
    return Qos(
        QosHistory(int(profile.history)), profile.depth, QosReliability(int(profile.reliability)),
        QosDurability(int(profile.durability)), _time(profile.deadline), _time(profile.lifespan),
        QosLiveliness(int(profile.liveliness)), _time(profile.liveliness_lease_duration),
        bool(profile.avoid_ros_namespace_conventions),
    )


def subscription_qos(publisher_profiles: list[Any]) -> Any:
    """Reliable (and transient-local) only when every publisher is; keep-last 10 otherwise default."""
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

    profile = QoSProfile(depth=10)
    reliable = all(p.reliability == ReliabilityPolicy.RELIABLE for p in publisher_profiles)
    profile.reliability = ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT
    latched = all(p.durability == DurabilityPolicy.TRANSIENT_LOCAL for p in publisher_profiles)
    profile.durability = DurabilityPolicy.TRANSIENT_LOCAL if latched else DurabilityPolicy.VOLATILE
    return profile


class Recorder:
    """Subscribes to topics as their publishers appear and writes the raw messages to an open bag writer."""

    def __init__(self, node: Any, writer: Writer, specs: list[TopicSpec], max_messages: int = 0) -> None:
        self.node, self.writer, self.max_messages = node, writer, max_messages
        self.pending = {node.resolve_topic_name(s.name): s for s in specs}
        self.counts: Counter[str] = Counter({name: 0 for name in self.pending})
        self.subscriptions: list[Any] = []
        self.errors: list[str] = []

    @property
    def total(self) -> int:
        """Messages written so far."""
        return sum(self.counts.values())

    @property
    def full(self) -> bool:
        """True once --max-messages is reached."""
        return 0 < self.max_messages <= self.total

    def discover(self) -> None:
        """Subscribe to every pending topic that now has publishers; report type conflicts."""
        for topic, spec in list(self.pending.items()):
            pubs = self.node.get_publishers_info_by_topic(topic)
            if not pubs:
                continue
            types = {p.topic_type for p in pubs}
            msgtype = spec.msgtype or (types.pop() if len(types) == 1 else None)
            if msgtype is None or (spec.msgtype and spec.msgtype not in types):
                self.errors.append(f"topic {topic}: published as {', '.join(sorted(types))}"
                                   + (f", not {spec.msgtype}" if spec.msgtype else "; give TOPIC:TYPE"))
                del self.pending[topic]
                continue
            ensure_type(msgtype)
            profiles = [p.qos_profile for p in pubs]
            conn = self.writer.add_connection(topic, msgtype, typestore=typestore(),
                                              offered_qos_profiles=[offered_qos(q) for q in profiles[:1]])
            self.subscriptions.append(self.node.create_subscription(
                message_class(msgtype), topic, self._callback(topic, conn), subscription_qos(profiles), raw=True))
            del self.pending[topic]
            print(f"recording {topic} ({msgtype})", flush=True)

    def _callback(self, topic: str, conn: Any) -> Any:
        def on_message(raw: bytes) -> None:
            if self.full:
                return
            self.writer.write(conn, self.node.get_clock().now().nanoseconds, raw)
            self.counts[topic] += 1

        return on_message


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `record`."""
    parser.add_argument("bag", help="bag folder to create (must not exist)")
    parser.add_argument("topics", nargs="+", metavar="TOPIC[:TYPE]", help="topics to record")
    parser.add_argument("--duration", type=float, default=0.0, help="stop after S seconds (0: until Ctrl-C)")
    parser.add_argument("--max-messages", type=int, default=0, help="stop after N messages in all (0: no limit)")
    parser.add_argument("--storage", choices=STORAGES, default="sqlite3")


def main(argv: list[str] | None = None) -> int:
    """`record`: write topics to a bag until interrupted, a duration or a message count; prints counts."""
    own, ros_args = split_ros_args(list(sys.argv[1:] if argv is None else argv))
    parser = argparse.ArgumentParser(prog="dig2dig-ros record", description=__doc__.splitlines()[0])
    add_arguments(parser)
    args = parser.parse_args(own)
    try:
        specs = [parse_topic(s) for s in args.topics]
        for spec in specs:
            if spec.msgtype:
                message_class(spec.msgtype)
                ensure_type(spec.msgtype)
        if Path(args.bag).exists():
            raise BagError(f"{args.bag} exists already; choose a new output path")
    except BagError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    previous = init_ros("recorder", ros_args)
    import rclpy
    plugin = StoragePlugin.SQLITE3 if args.storage == "sqlite3" else StoragePlugin.MCAP
    writer = Writer(Path(args.bag), version=9, storage_plugin=plugin)
    node, recorder, status = None, None, 0
    started = time.monotonic()
    try:
        writer.open()
        node = rclpy.create_node("bag_recorder")
        recorder = Recorder(node, writer, specs, args.max_messages)
        print(f"waiting for {', '.join(recorder.pending)}", flush=True)
        next_discovery = 0.0
        # Ctrl-C / SIGTERM end the loop between two spins rather than raising inside rclpy or the writer.
        stop = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
        while not stop.is_set() and not recorder.full and not (
                args.duration > 0 and time.monotonic() - started >= args.duration):
            if recorder.pending and time.monotonic() >= next_discovery:
                recorder.discover()
                next_discovery = time.monotonic() + 0.1
            rclpy.spin_once(node, timeout_sec=0.02)
    except KeyboardInterrupt:
        pass
    except BagError as exc:
        print(f"error: {exc}", file=sys.stderr)
        status = 2
    finally:
        try:
            if writer.storage is not None:
                writer.close()
        finally:
            if node is not None:
                node.destroy_node()
            rclpy.try_shutdown()
            signal.signal(signal.SIGTERM, previous)
            signal.signal(signal.SIGINT, signal.default_int_handler)
    if recorder is not None:
        for line in recorder.errors:
            print(f"error: {line}", file=sys.stderr)
        for topic in recorder.pending:
            print(f"warning: no publisher appeared on {topic}", file=sys.stderr)
        per_topic = ", ".join(f"{t} {n}" for t, n in recorder.counts.items())
        print(f"recorded {recorder.total} messages in {time.monotonic() - started:.1f} s to {args.bag}: {per_topic}",
              flush=True)
        status = status or (2 if recorder.errors else 0)
    return status


if __name__ == "__main__":
    sys.exit(main())
