"""Input subscriptions whose reliability follows the topic's publishers, and whose transport losses are counted.

rosbag2's rule: subscribe reliable when every publisher offers reliable, best effort otherwise (a reliable
reader never matches a best-effort writer: nothing would arrive), and, as its recorder does, subscribe only once
a publisher is there: a best-effort reader made before a reliable camera appears would lose its large frames
until the switch. A camera started after the node, or replaced
by another driver, is picked up by ``refresh()``, which a node calls from a timer. An explicit choice (the
node's ``qos.input_reliability`` parameter, or the standard ``qos_overrides.<topic>.subscription.reliability``)
always wins. Every message the middleware reports lost (rmw's ``message_lost`` event) is counted, and
``loss_cause()`` says in one line how many, where, and the likely cause and remedy.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from rclpy.event_handler import SubscriptionEventCallbacks
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSPolicyKind, QoSProfile, ReliabilityPolicy
from rclpy.qos_overriding_options import QoSOverridingOptions

from dig2dig_ros.ros.graph import fastdds_profile
from dig2dig_ros.ros.params import RELIABILITY_CHOICES
from dig2dig_ros.ros.sync import SimpleFilter, Subscriber, header_stamp_ns

# Fast DDS's stock shared-memory segment: a larger sample cannot travel by shared memory between processes that
# load no profile, and best-effort UDP fragments of it are easily lost.
STOCK_SEGMENT_BYTES = 512 * 1024
RETIRE_AFTER_S = 5.0  # a replaced subscription is destroyed at the latest this long after its successor started
_NAMES = {ReliabilityPolicy.RELIABLE: "reliable", ReliabilityPolicy.BEST_EFFORT: "best effort"}


REFRESH_S = 0.25  # how often a node re-reads its inputs' publishers (cameras that start late, or change QoS)


def matched_reliability(offered: list[ReliabilityPolicy]) -> ReliabilityPolicy:
    """Reliable when every publisher offers reliable, best effort otherwise (also with no publisher, which
    :class:`MatchedInput` does not subscribe for)."""
    if offered and all(r == ReliabilityPolicy.RELIABLE for r in offered):
        return ReliabilityPolicy.RELIABLE
    return ReliabilityPolicy.BEST_EFFORT


def override_name(topic: str) -> str:
    """The standard per-topic reliability override parameter of a subscription."""
    return f"qos_overrides.{topic}.subscription.reliability"


class MatchedInput:
    """One image subscription: its reliability chosen from the publishers (or fixed), its losses counted.

    ``callback`` gets every message. Following the publishers, it subscribes only once there is one (until then
    ``subscription`` and ``reliability`` are None), and keeps its subscription when they all leave.
    ``refresh()`` re-reads the publishers and re-creates the subscription when the choice changes (one log line
    each time), without a gap: the old subscription keeps delivering until the
    new one has delivered a frame, and a frame both deliver is passed on once (by stamp). ``lost`` counts
    messages rmw reported lost since start.
    """

    def __init__(self, node: Node, msg_type: Any, topic: str, callback: Callable[[Any], None], depth: int,
                 reliability: str = "auto", label: str = "") -> None:
        if reliability not in RELIABILITY_CHOICES:
            raise ValueError(f"reliability must be one of {', '.join(RELIABILITY_CHOICES)}; got {reliability!r}")
        self.node, self.msg_type, self.callback, self.depth = node, msg_type, callback, int(depth)
        self.topic = node.resolve_topic_name(topic)
        self.label = label or self.topic
        self.fixed = self._explicit(reliability)
        self.lock = threading.Lock()
        self.lost = 0
        self.incompatible = 0
        # (monotonic, messages lost, the reliability of the subscription that lost them)
        self.losses: deque[tuple[float, int, ReliabilityPolicy]] = deque(maxlen=1000)
        self.offered: list[ReliabilityPolicy] = []
        self.last_size = 0  # bytes of the newest message received (its data field)
        self.last_message: Any = None
        self.subscription: Any = None
        self.retiring: Any = None  # the previous subscription, until the new one delivers
        self.retiring_since = 0.0
        self.switched = False  # the new subscription has delivered: the old one's messages are ignored
        self.last_stamp: int | None = None  # of the newest message passed on (nanoseconds)
        self.reliability: ReliabilityPolicy | None = None  # None: no subscription yet (no publisher to follow)
        self.waiting = False  # the "waiting for a publisher" line was logged
        self.refresh()

    def _explicit(self, reliability: str) -> ReliabilityPolicy | None:
        """The fixed reliability: the topic's qos_overrides parameter first, then the node's setting."""
        name = override_name(self.topic)
        if not self.node.has_parameter(name):
            # Declared here (read-only, empty = follow the publishers) so a value from the parameters file or the
            # command line reaches us; rclpy's own QoS overriding declares only history and depth below.
            self.node.declare_parameter(name, "", _descriptor(self.topic))
        value = str(self.node.get_parameter(name).value or "").lower()
        if value in ("reliable", "best_effort"):
            return ReliabilityPolicy.RELIABLE if value == "reliable" else ReliabilityPolicy.BEST_EFFORT
        if value not in ("", "system_default"):
            raise ValueError(f"{name} must be reliable or best_effort; got {value!r}")
        if reliability == "auto":
            return None
        return ReliabilityPolicy.RELIABLE if reliability == "reliable" else ReliabilityPolicy.BEST_EFFORT

    @property
    def follows_publishers(self) -> bool:
        return self.fixed is None

    def refresh(self) -> bool:
        """Match the publishers now; True when the subscription was (re)created."""
        infos = self.node.get_publishers_info_by_topic(self.topic)
        offered = [info.qos_profile.reliability for info in infos]
        with self.lock:
            self.offered = offered
            retired = self.retiring is not None and (self.switched or
                                                     time.monotonic() - self.retiring_since > RETIRE_AFTER_S)
        if retired:  # the new subscription delivers (or the publishers went silent): the old one goes
            self._retire()
        if self.fixed is None and not offered:
            # No publisher (yet, or any more): nothing to follow. Before the first one, no subscription at all
            # (rosbag2's recorder waits likewise), so a reliable camera's first frames never meet a best-effort
            # reader that loses them; after the last one, the subscription stays as it was, for a restarted camera.
            if self.subscription is None and not self.waiting:
                self.waiting = True
                self.node.get_logger().info(f"{self.label} input {self.topic}: waiting for a publisher (subscribes "
                                            "with the reliability it offers)")
            return False
        wanted = self.fixed if self.fixed is not None else matched_reliability(offered)
        if wanted == self.reliability and self.subscription is not None:
            return False
        previous = self.reliability
        if self.retiring is not None:
            self._retire()
        qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=self.depth, reliability=wanted,
                         durability=DurabilityPolicy.VOLATILE)
        events = SubscriptionEventCallbacks(message_lost=lambda info: self._on_lost(info, wanted),
                                            incompatible_qos=self._on_incompatible)
        with self.lock:
            self.retiring, self.retiring_since, self.switched = self.subscription, time.monotonic(), False
        subscription = None

        def deliver(msg: Any) -> None:
            self._on_message(msg, subscription)

        subscription = self.node.create_subscription(
            self.msg_type, self.topic, deliver, qos, event_callbacks=events,
            qos_overriding_options=QoSOverridingOptions(policy_kinds=(QoSPolicyKind.HISTORY, QoSPolicyKind.DEPTH)))
        with self.lock:
            self.subscription = subscription
        self.reliability = wanted
        why = "fixed by parameter" if self.fixed is not None else self.describe_publishers(offered)
        if previous is None:
            self.node.get_logger().info(f"{self.label} input {self.topic}: subscribed {_NAMES[wanted]} ({why})")
        else:
            self.node.get_logger().info(
                f"{self.label} input {self.topic}: publishers changed, now subscribed {_NAMES[wanted]} "
                f"(was {_NAMES[previous]}; {why})")
        return True

    def destroy(self) -> None:
        """Destroy the subscription (and the one it is replacing, if a switch is under way); losses stay counted."""
        with self.lock:
            subscriptions, self.subscription, self.retiring = (self.subscription, self.retiring), None, None
        for subscription in subscriptions:
            if subscription is not None:
                self.node.destroy_subscription(subscription)

    @staticmethod
    def describe_publishers(offered: list[ReliabilityPolicy]) -> str:
        if not offered:
            return "no publisher yet"
        kinds = sorted({_NAMES.get(r, str(r)) for r in offered})
        return f"{len(offered)} publisher{'s' if len(offered) > 1 else ''} offering {' and '.join(kinds)}"

    def _retire(self) -> None:
        with self.lock:
            old, self.retiring = self.retiring, None
        if old is not None:
            self.node.destroy_subscription(old)

    def _on_message(self, msg: Any, source: Any) -> None:
        stamp = header_stamp_ns(msg)
        with self.lock:
            if source is not self.subscription:
                if source is not self.retiring or self.switched:
                    return  # a subscription already replaced
                # the old subscription: passed on until the new one delivers
            elif self.retiring is not None:
                self.switched = True  # the new one delivers: the old one is ignored, refresh() destroys it
                if stamp and self.last_stamp is not None and stamp <= self.last_stamp:
                    return  # the old subscription passed this one on already (a camera stamping 0: no check)
            self.last_stamp = stamp
            self.last_size = len(getattr(msg, "data", b""))
            self.last_message = msg  # its shape is read only when a loss is explained
        self.callback(msg)

    def _on_lost(self, info: Any, reliability: ReliabilityPolicy | None = None) -> None:
        count = int(info.total_count_change)
        with self.lock:
            self.lost += count
            self.losses.append((time.monotonic(), count, reliability or self.reliability))

    def _on_incompatible(self, info: Any) -> None:
        with self.lock:
            self.incompatible += 1
        self.node.get_logger().warning(
            f"{self.label} input {self.topic}: a publisher's QoS is incompatible with this subscription "
            f"({_NAMES.get(self.reliability, '?')}); nothing arrives from it. Remove the reliability override to "
            "follow the publishers", throttle_duration_sec=10.0)

    def lost_since(self, since: float) -> int:
        """Messages reported lost after the monotonic time ``since``."""
        with self.lock:
            return sum(n for t, n, _ in self.losses if t >= since)

    def loss_cause(self, lost: int, window: float) -> str:
        """One line: how many were lost on which topic, the likely cause, and the remedy."""
        with self.lock:  # and the subscription that lost them (a switch may have replaced it since)
            size, shape, offered = self.last_size, _shape(self.last_message), list(self.offered)
            lossy = self.losses[-1][2] if self.losses else self.reliability
        mine = _NAMES.get(lossy, "?")
        writers = self.describe_publishers(offered)
        text = f"lost {lost} {self.label} frames in the last {window:.0f} s on {self.topic} (subscribed {mine}, " \
               f"{writers}"
        text += f"; frames {shape}, {size / 1e6:.1f} MB)" if size else ")"
        if lossy == ReliabilityPolicy.BEST_EFFORT and self.reliability == ReliabilityPolicy.RELIABLE \
                and self.fixed is None:
            return text + ": lost while this subscription was still best effort, before it followed the reliable " \
                          "publishers (just after a camera appears); nothing to do"
        if self.reliability == ReliabilityPolicy.BEST_EFFORT and offered and \
                all(r == ReliabilityPolicy.RELIABLE for r in offered):
            return text + ": the publishers are reliable but this subscription is fixed best effort; let it " \
                          f"follow the publishers (qos.input_reliability auto, no {override_name(self.topic)})"
        large = size == 0 or size > STOCK_SEGMENT_BYTES
        cause = "frames larger than Fast DDS's stock 512 KB shared-memory segment, sent best effort, lose " \
                "fragments" if large else "best-effort delivery drops frames under load"
        return (f"{text}: {cause}. Remedy: start the camera driver with FASTRTPS_DEFAULT_PROFILES_FILE="
                f"{fastdds_profile()} (the publisher needs the profile), or make it publish reliable "
                "(docs/ROBOT.md, 'Cameras and transport')")


class MatchedSubscriber(Subscriber):
    """A message_filters-style Subscriber (dig2dig_ros.ros.sync) on a MatchedInput."""

    def __init__(self, node: Node, msg_type: Any, topic: str, depth: int, reliability: str = "auto",
                 label: str = "") -> None:
        SimpleFilter.__init__(self)  # the MatchedInput owns the subscription, not Subscriber.__init__
        self.node, self.topic = node, topic
        self.input = MatchedInput(node, msg_type, topic, self.callback, depth, reliability, label)

    @property
    def sub(self) -> Any:  # the current subscription (re-created when the publishers change)
        return self.input.subscription

    @property
    def resolved_topic(self) -> str:
        return self.input.topic

    def destroy(self) -> None:
        """Destroy the subscription, and the one it is replacing if a switch is under way."""
        self.input.destroy()


def _shape(msg: Any) -> str:
    """'WxH encoding' of an Image, the format of a CompressedImage, '' for none."""
    if msg is None:
        return ""
    if hasattr(msg, "width"):
        return f"{msg.width}x{msg.height} {msg.encoding}"
    return getattr(msg, "format", "") or "compressed"


def _descriptor(topic: str) -> Any:
    from rcl_interfaces.msg import ParameterDescriptor

    return ParameterDescriptor(
        description=f"reliability for subscription `{topic}`: reliable or best_effort; empty = follow the "
                    "publishers (reliable only when every publisher is)", read_only=True,
        type=Parameter.Type.STRING.value)
