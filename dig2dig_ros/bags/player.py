"""`play`: replay a rosbag2 into the ROS graph, publishing each message's raw CDR bytes at the recorded pace.

    dig2dig-ros play BAG [--rate X] [--loop] [--clock [HZ]] [--topics T ...] [--delay S]
                         [--wait-for-subscribers S] [--linger S] [--ros-args ...]

Topics keep their recorded (absolute) names, remappable with `--ros-args -r /ir/image:=/cam/ir`. Each
publisher uses the QoS offered when the bag was recorded (reliable, keep-last 10 when none is recorded);
a reliable publisher also serves best-effort (sensor-data) subscribers. `--clock` publishes
rosgraph_msgs/Clock on /clock (default 100 Hz) following bag time, for nodes run with use_sim_time.
A bag that cannot be read, or whose message types are not installed, gets one error line and exit status 2.
"""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from rosbags.interfaces import Qos, QosDurability, QosReliability

from dig2dig_ros.bags.bag import BagError, BagTopic, bag_topics, read_messages

DEFAULT_CLOCK_HZ = 100.0
_INFINITE_SEC = 2**31 - 1  # rosbag2 writes "infinite" durations as huge second counts


def message_class(msgtype: str) -> Any:
    """The installed Python class of a ROS message type such as 'sensor_msgs/msg/Image'; BagError if absent."""
    parts = msgtype.split("/")
    if len(parts) != 3 or not all(parts):
        raise BagError(f"malformed message type {msgtype!r} (expected package/msg/Name)")
    pkg, sub, name = parts
    try:
        cls = getattr(importlib.import_module(f"{pkg}.{sub}"), name)
    except (ImportError, AttributeError):
        raise BagError(f"message type {msgtype} is not installed here (no Python class {pkg}.{sub}.{name}); "
                       "install its package, or leave its topic out with --topics") from None
    return cls


def _duration(t: Any) -> Any:
    from rclpy.duration import Duration

    if (t.sec == 0 and t.nsec == 0) or t.sec >= _INFINITE_SEC:
        return None
    return Duration(seconds=t.sec, nanoseconds=t.nsec)


def playback_qos(offered: Sequence[Qos]) -> Any:
    """The rclpy QoSProfile to replay a topic with, from the profiles offered when it was recorded.

    Reliable unless a recorded publisher was best effort; transient-local only when all were; keep-last with
    depth at least 10; finite deadline and lifespan kept. No profiles: reliable, volatile, keep-last 10.
    """
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

    profile = QoSProfile(depth=max([10] + [q.depth for q in offered]))
    best_effort = any(q.reliability == QosReliability.BEST_EFFORT for q in offered)
    profile.reliability = ReliabilityPolicy.BEST_EFFORT if best_effort else ReliabilityPolicy.RELIABLE
    latched = bool(offered) and all(q.durability == QosDurability.TRANSIENT_LOCAL for q in offered)
    profile.durability = DurabilityPolicy.TRANSIENT_LOCAL if latched else DurabilityPolicy.VOLATILE
    if len(offered) == 1:
        for name in ("deadline", "lifespan"):
            value = _duration(getattr(offered[0], name))
            if value is not None:
                setattr(profile, name, value)
    return profile


def select_topics(topics: list[BagTopic], wanted: Sequence[str]) -> list[BagTopic]:
    """The bag topics to play (all when `wanted` is empty), with their types checked to be installed."""
    names = {w if w.startswith("/") else "/" + w for w in wanted}
    chosen = [t for t in topics if not names or (t.name if t.name.startswith("/") else "/" + t.name) in names]
    missing = names - {t.name if t.name.startswith("/") else "/" + t.name for t in topics}
    if missing:
        have = ", ".join(t.name for t in topics) or "none"
        raise BagError(f"topic(s) {', '.join(sorted(missing))} not in the bag (it has: {have})")
    if not chosen:
        raise BagError("the bag has no topics")
    for t in chosen:
        try:
            message_class(t.msgtype)
        except BagError as exc:
            raise BagError(f"topic {t.name}: {exc}") from None
    return chosen


def raise_interrupt(signum: int, frame: Any) -> None:
    """Signal handler: end like Ctrl-C (SIGTERM too closes bags and nodes cleanly)."""
    raise KeyboardInterrupt


def init_ros(program: str, ros_args: list[str]) -> Any:
    """Fast DDS profile, SIGTERM ending like Ctrl-C, rclpy.init without its own handlers; returns the previous
    SIGTERM handler for the caller to restore."""
    use_fastdds_profile()
    import rclpy
    from rclpy.signals import SignalHandlerOptions

    previous = signal.signal(signal.SIGTERM, raise_interrupt)
    rclpy.init(args=[program, *ros_args], signal_handler_options=SignalHandlerOptions.NO)
    return previous


def use_fastdds_profile() -> None:
    """Point Fast DDS at the shipped shared-memory profile (large frames) unless the user chose one."""
    from dig2dig_ros.ros.graph import profile_environment

    os.environ.update(profile_environment(dict(os.environ)))


class Player:
    """Publishes a bag's messages as raw bytes at the recorded pace (scaled by `rate`), with optional /clock."""

    def __init__(self, node: Any, topics: list[BagTopic], rate: float, clock_hz: float) -> None:
        from rosgraph_msgs.msg import Clock

        self.node, self.rate = node, rate
        self.publishers = {t.name: node.create_publisher(message_class(t.msgtype), t.name, playback_qos(t.qos))
                           for t in topics}
        self.clock_pub = node.create_publisher(Clock, "/clock", 10) if clock_hz > 0 else None
        self.clock_period = 1.0 / clock_hz if clock_hz > 0 else 0.0
        self._clock_msg, self._next_clock, self._last_clock = Clock(), 0.0, -1
        self.counts: Counter[str] = Counter()

    def publish_clock(self, bag_ns: int) -> None:
        """Publish /clock at bag time `bag_ns` (never backwards within a pass)."""
        if self.clock_pub is None:
            return
        bag_ns = max(bag_ns, self._last_clock)
        self._last_clock = bag_ns
        self._clock_msg.clock.sec, self._clock_msg.clock.nanosec = divmod(bag_ns, 10**9)
        self.clock_pub.publish(self._clock_msg)

    def wait(self, until: float, bag_time: Callable[[float], int]) -> None:
        """Sleep until monotonic time `until`, publishing /clock at its rate meanwhile."""
        while True:
            now = time.monotonic()
            if self.clock_pub is not None and now >= self._next_clock:
                self.publish_clock(bag_time(now))
                self._next_clock += self.clock_period  # a fixed schedule: the average rate holds under load
                if self._next_clock < now - 0.1:
                    self._next_clock = now  # after a long stall, resume rather than burst
            if now >= until:
                return
            wake = min(until, self._next_clock) if self.clock_pub is not None else until
            time.sleep(max(0.0, wake - now))

    def wait_for_subscribers(self, timeout: float) -> bool:
        """Wait up to `timeout` s until every topic publisher has a subscriber; True when they all do."""
        deadline = time.monotonic() + timeout
        while any(p.get_subscription_count() == 0 for p in self.publishers.values()):
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.02)
        return True

    def play_once(self, bag: str | Path) -> None:
        """One pass over the bag, paced by receive time; raises BagError if the bag breaks off."""
        start_wall, start_bag = None, 0
        self._last_clock = -1

        def bag_time(now: float) -> int:
            return start_bag + round((now - start_wall) * self.rate * 1e9) if start_wall is not None else 0

        for m in read_messages(bag, list(self.publishers)):
            if start_wall is None:
                start_wall, start_bag = time.monotonic(), m.timestamp
            self.wait(start_wall + (m.timestamp - start_bag) / 1e9 / self.rate, bag_time)
            self.publish_clock(m.timestamp)
            self.publishers[m.topic].publish(m.raw)
            self.counts[m.topic] += 1

    def linger(self, seconds: float) -> None:
        """Keep publishers alive a little so reliable subscribers receive the last messages."""
        end = time.monotonic() + seconds
        for pub in self.publishers.values():
            remaining = end - time.monotonic()
            if remaining > 0:
                from rclpy.duration import Duration

                pub.wait_for_all_acked(Duration(nanoseconds=int(remaining * 1e9)))
        last = self._last_clock
        self.wait(end, lambda now: last)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `play`."""
    parser.add_argument("bag", help="rosbag2 folder (or its .db3 / .mcap file)")
    parser.add_argument("--rate", type=float, default=1.0, help="playback speed factor (default 1)")
    parser.add_argument("--loop", action="store_true", help="replay until interrupted")
    parser.add_argument("--clock", type=float, nargs="?", const=DEFAULT_CLOCK_HZ, default=0.0, metavar="HZ",
                        help=f"publish /clock following bag time (default {DEFAULT_CLOCK_HZ:g} Hz)")
    parser.add_argument("--topics", nargs="+", default=[], metavar="TOPIC", help="play only these topics")
    parser.add_argument("--delay", type=float, default=0.5,
                        help="seconds between creating publishers and the first message (discovery), default 0.5")
    parser.add_argument("--wait-for-subscribers", type=float, default=0.0, metavar="S",
                        help="wait up to S seconds until every topic has a subscriber before playing")
    parser.add_argument("--linger", type=float, default=1.0,
                        help="seconds to stay up after the last message (default 1)")


def split_ros_args(argv: list[str]) -> tuple[list[str], list[str]]:
    """(our arguments, `--ros-args ...` for rclpy)."""
    if "--ros-args" in argv:
        i = argv.index("--ros-args")
        return argv[:i], argv[i:]
    return argv, []


def main(argv: list[str] | None = None) -> int:
    """`play`: publish a bag's messages; prints how many were published per topic."""
    own, ros_args = split_ros_args(list(sys.argv[1:] if argv is None else argv))
    parser = argparse.ArgumentParser(prog="dig2dig-ros play", description=__doc__.splitlines()[0])
    add_arguments(parser)
    args = parser.parse_args(own)
    if not args.rate > 0:
        parser.error("--rate must be positive")
    try:
        topics = select_topics(bag_topics(args.bag), args.topics)
    except BagError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    previous = init_ros("player", ros_args)
    import rclpy
    node, status, started = None, 0, time.monotonic()
    player = None
    try:
        node = rclpy.create_node("bag_player")
        player = Player(node, topics, args.rate, args.clock)
        if args.wait_for_subscribers > 0 and not player.wait_for_subscribers(args.wait_for_subscribers):
            print(f"warning: not every topic had a subscriber after {args.wait_for_subscribers:g} s",
                  file=sys.stderr)
        time.sleep(max(0.0, args.delay))
        while True:
            player.play_once(args.bag)
            if not args.loop:
                break
        player.linger(args.linger)
    except BagError as exc:
        print(f"error: {exc}", file=sys.stderr)
        status = 2
    except KeyboardInterrupt:
        status = 0
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
        signal.signal(signal.SIGTERM, previous)
    if player is not None:
        total = sum(player.counts.values())
        per_topic = ", ".join(f"{t} {player.counts[t]}" for t in player.publishers)
        print(f"published {total} messages in {time.monotonic() - started:.1f} s: {per_topic}", flush=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
