"""Time synchronisation of several message streams, with message_filters' Python API.

``Subscriber`` → ``ApproximateTimeSynchronizer(fs, queue_size, slop)`` → ``registerCallback(cb)``, as in
message_filters (which is not on PyPI), but with the guarantees of the ROS 1 / C++ ApproximateTime policy
instead of the Python version's greedy matching. Importing this module needs neither rclpy nor a ROS graph.
"""

from __future__ import annotations

import copy
import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

NS_PER_S = 1_000_000_000
DROP_REASONS = ("queue_overflow", "too_old", "no_partner", "superseded", "headerless")

_log = logging.getLogger(__name__)


def stamp_ns(stamp: Any) -> int:
    """A time as integer nanoseconds: builtin_interfaces/Time (sec, nanosec), rclpy Time, or float seconds."""
    if hasattr(stamp, "sec") and hasattr(stamp, "nanosec"):
        return int(stamp.sec) * NS_PER_S + int(stamp.nanosec)
    if hasattr(stamp, "nanoseconds"):
        return int(stamp.nanoseconds)
    return round(float(stamp) * NS_PER_S)


def header_stamp_ns(msg: Any) -> int | None:
    """msg.header.stamp in nanoseconds, or None for a message without one."""
    stamp = getattr(getattr(msg, "header", None), "stamp", None)
    return None if stamp is None else stamp_ns(stamp)


class SimpleFilter:
    """A source of messages that callbacks can be registered on (message_filters.SimpleFilter)."""

    def __init__(self) -> None:
        self.callbacks: dict[int, tuple[Callable[..., Any], tuple[Any, ...]]] = {}
        self._conn_ids = itertools.count()

    def registerCallback(self, cb: Callable[..., Any], *args: Any) -> int:  # noqa: N802 (message_filters API)
        """Call cb(*msgs, *args) on every output; returns a connection id for unregisterCallback."""
        conn = next(self._conn_ids)
        self.callbacks[conn] = (cb, args)
        return conn

    def unregisterCallback(self, conn: int) -> None:  # noqa: N802 (message_filters API)
        """Stop calling the callback registered under conn."""
        self.callbacks.pop(conn, None)

    def signalMessage(self, *msg: Any) -> None:  # noqa: N802 (message_filters API)
        """Pass msg (one message, or one synchronised set) to every registered callback."""
        for cb, args in list(self.callbacks.values()):
            cb(*(msg + args))


class Subscriber(SimpleFilter):
    """An rclpy subscription feeding a filter chain (message_filters.Subscriber)."""

    def __init__(self, node: Any, msg_type: Any, topic: str, qos_profile: Any = 10, **kwargs: Any) -> None:
        super().__init__()
        self.node = node
        self.topic = topic
        self.sub = node.create_subscription(msg_type, topic, self.callback, qos_profile, **kwargs)

    def callback(self, msg: Any) -> None:
        """The subscription callback: forwards msg to the registered callbacks."""
        self.signalMessage(msg)

    def getTopic(self) -> str:  # noqa: N802 (message_filters API)
        """The topic name as given (see ``resolved_topic`` for the name after remapping)."""
        return self.topic

    @property
    def resolved_topic(self) -> str:
        """The fully resolved topic name (namespace and remaps applied)."""
        return self.sub.topic_name

    def destroy(self) -> None:
        """Destroy the underlying subscription."""
        self.node.destroy_subscription(self.sub)


@dataclass
class SyncStats:
    """Counters for diagnostics, one entry per input: received, dropped by reason; sets emitted.

    Drop reasons: ``queue_overflow`` (oldest dropped past queue_size), ``too_old`` (stamp not after the last
    message emitted or received on its input), ``no_partner`` (no set within slop can contain it),
    ``superseded`` (skipped: a set used a later message of its input), ``headerless`` (no header.stamp and
    allow_headerless is off).
    """

    received: list[int]
    dropped: list[dict[str, int]]
    bound_violations: list[int]  # messages earlier than their input's inter-message lower bound allowed
    emitted: int = 0
    flushed: int = 0  # sets emitted by flush_stale before they were proven best
    last_spread_s: float | None = None

    @classmethod
    def empty(cls, n: int) -> SyncStats:
        return cls(received=[0] * n, dropped=[dict.fromkeys(DROP_REASONS, 0) for _ in range(n)],
                   bound_violations=[0] * n)


@dataclass
class _Input:
    queue: deque[tuple[int, Any]] = field(default_factory=deque)  # (stamp ns, msg), stamps non-decreasing
    last_received: int | None = None
    last_emitted: int | None = None
    warned_headerless: bool = False
    intervals: deque[int] = field(default_factory=lambda: deque(maxlen=16))  # recent stamp intervals, ns
    fixed_bound: int = 0  # setInterMessageLowerBound, ns


class ApproximateTimeSynchronizer(SimpleFilter):
    """Emits one message per input whose stamps lie within ``slop`` seconds, with C++ ApproximateTime's rules.

    Definition (stamps only). Let f_j be the oldest pending message of input j, P (the pivot) the latest of
    the f_j and m the earliest. If stamp(P) − stamp(m) > slop, m cannot be in any set (every other input
    only has messages at or after its f_j): drop m and repeat. Otherwise emit, among all sets that contain
    P, the one with the smallest spread (max − min stamp), ties to the earliest; then drop, per input, every
    pending message not later than the one emitted. Each W(s) = "first message ≥ s on every input" with
    s ≤ stamp(P) contains P (P is its input's oldest), and the best set containing P is one of them (for a
    set spanning [a, b], W(a) spans at most [a, b]), so a sweep over increasing s finds it.

    Online: the sweep runs over the messages received so far and a set is emitted only once it is provably
    the one the definition picks, whatever arrives later (per-input stamps never decrease):
      - the sweep reaches s = stamp(P): later windows do not contain P;
      - the current window ends at e with e − stamp(P) ≥ best spread: every later window contains P and
        messages at or after the current ones, so spans at least [stamp(P), e];
      - the sweep must advance input j past its last message (stamp L): every remaining window starts after
        L, so on every other input k uses a message at or after k's first one later than L; if the latest of
        those, e, gives e − stamp(P) ≥ best spread, no remaining window is better.
    Otherwise it waits for more messages. Hence: every message is used at most once; sets never cross and
    never go backwards (per input, each set's message is strictly later than the previous set's); every
    spread is ≤ slop; and the output depends on the stamps only, not on how inputs interleave on arrival
    (it is a prefix of what the definition gives on the complete streams). A message older than its input's
    last received one, or not later than its input's last emitted one, is dropped as ``too_old``. Queue
    overflow (more than queue_size pending on an input: the oldest is dropped) is the one arrival-dependent
    event. Callbacks run outside the lock, in emission order.

    Waiting for later messages costs latency: without more knowledge, a set whose latest message is on one
    input waits for the *next* message of every other input (with a 9 Hz camera beside a 30 Hz one, up to
    ~110 ms). Two ways to decide sooner, both off by default:
      - an inter-message lower bound per input (C++ ``setInterMessageLowerBound``): the next message of input
        j is stamped at least b_j after its last one, so the run-out rule above can use last_j + b_j instead
        of waiting for that message. Fixed with ``setInterMessageLowerBound(j, seconds)``, or estimated with
        ``interval_bound=f``: b_j = f × the median of input j's last 16 stamp intervals (after 3 of them).
        Exact while the bound holds; a message that breaks it is counted (``bound_violations``) and used
        normally, but a set already emitted may then not be the one the definition picks (this, and only
        this, is what the bound trades: every other guarantee above still holds).
      - ``flush_stale(max_age)``: a caller (the node's timer) emits the best set so far once the decision has
        been pending for max_age seconds of its clock, e.g. a single pair, or the last pair before a camera
        stops. This trades optimality, and the output's independence of arrival timing, only for messages that
        arrive more than max_age after the set they would have beaten; sets still never cross.
    A set with equal stamps needs neither: nothing can beat spread 0, so it is emitted as soon as it is
    complete.
    """

    def __init__(
        self,
        fs: Sequence[SimpleFilter],
        queue_size: int,
        slop: float,
        allow_headerless: bool = False,
        *,
        clock: Callable[[], Any] | None = None,
        interval_bound: float = 0.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        if int(queue_size) < 1:
            raise ValueError(f"queue_size must be at least 1, got {queue_size}")
        if not float(slop) >= 0.0:
            raise ValueError(f"slop must be a non-negative number of seconds, got {slop}")
        if not 0.0 <= float(interval_bound) <= 1.0:
            raise ValueError(f"interval_bound must be a fraction in [0, 1], got {interval_bound}")
        self.interval_bound = float(interval_bound)
        self.monotonic = monotonic
        self._blocked_since: float | None = None  # monotonic time the pending decision started waiting
        self.queue_size = int(queue_size)
        self.slop = float(slop)
        self.slop_ns = round(self.slop * NS_PER_S)
        self.allow_headerless = bool(allow_headerless)
        self.clock: Callable[[], Any] = clock if clock is not None else time.time
        self._lock = threading.Lock()
        self._dispatch_lock = threading.Lock()
        self._outbox: deque[tuple[Any, ...]] = deque()
        self._inputs: list[_Input] = []
        self._stats = SyncStats.empty(0)
        self.input_connections: list[tuple[SimpleFilter, int]] = []
        self.connectInput(fs)

    def connectInput(self, fs: Sequence[SimpleFilter]) -> None:  # noqa: N802 (message_filters API)
        """Take inputs from the filters fs (in that order), replacing any earlier inputs and pending state."""
        for f, conn in self.input_connections:
            f.unregisterCallback(conn)
        with self._lock:
            self._inputs = [_Input() for _ in fs]
            self._stats = SyncStats.empty(len(fs))
            self._outbox.clear()
        self.input_connections = [(f, f.registerCallback(self.add, i)) for i, f in enumerate(fs)]

    def setInterMessageLowerBound(self, index: int, seconds: float) -> None:  # noqa: N802 (message_filters API)
        """Promise that input index's stamps are at least seconds apart (0: no promise)."""
        if not float(seconds) >= 0.0:
            raise ValueError(f"the inter-message lower bound must be >= 0 s, got {seconds}")
        with self._lock:
            self._inputs[index].fixed_bound = round(float(seconds) * NS_PER_S)

    def lower_bound_ns(self, index: int) -> int:
        """The lower bound in effect on input index's next stamp interval, ns (0: none)."""
        inp = self._inputs[index]
        bound = inp.fixed_bound
        if self.interval_bound > 0.0 and len(inp.intervals) >= 3:
            bound = max(bound, int(self.interval_bound * sorted(inp.intervals)[len(inp.intervals) // 2]))
        return bound

    def flush_stale(self, max_age: float) -> int:
        """Emit the best pending set if its decision has waited max_age seconds or more (monotonic clock);
        returns how many sets were emitted (each counted in ``stats.flushed``)."""
        with self._lock:
            since = self._blocked_since
            if since is None or self.monotonic() - since < max_age:
                return 0
            before = self._stats.emitted
            self._process(force=True)
            flushed = self._stats.emitted - before
            self._stats.flushed += flushed
        self._dispatch()
        return flushed

    @property
    def stats(self) -> SyncStats:
        """A snapshot of the counters."""
        with self._lock:
            return copy.deepcopy(self._stats)

    def pending(self) -> list[int]:
        """How many messages wait on each input."""
        with self._lock:
            return [len(inp.queue) for inp in self._inputs]

    def reset(self) -> None:
        """Forget pending messages and the last stamps (e.g. after time jumped back); counters are kept."""
        with self._lock:
            self._inputs = [_Input(fixed_bound=inp.fixed_bound) for inp in self._inputs]
            self._outbox.clear()
            self._blocked_since = None

    def add(self, msg: Any, index: int) -> None:
        """Feed msg to input number index; emits every set this makes final."""
        with self._lock:
            self._add_locked(msg, index)
        self._dispatch()

    def _add_locked(self, msg: Any, index: int) -> None:
        inp = self._inputs[index]
        self._stats.received[index] += 1
        stamp = header_stamp_ns(msg)
        if stamp is None:
            if not self.allow_headerless:
                self._drop(index, "headerless")
                if not inp.warned_headerless:
                    inp.warned_headerless = True
                    _log.warning(
                        "input %d: %s has no header.stamp; dropped (allow_headerless=True stamps such "
                        "messages with their arrival time)", index, type(msg).__name__,
                    )
                return
            stamp = stamp_ns(self.clock())
        if (inp.last_received is not None and stamp < inp.last_received) or (
            inp.last_emitted is not None and stamp <= inp.last_emitted
        ):
            self._drop(index, "too_old")
            return
        if inp.last_received is not None:
            if stamp < inp.last_received + self.lower_bound_ns(index):
                self._stats.bound_violations[index] += 1
            if stamp > inp.last_received:
                inp.intervals.append(stamp - inp.last_received)
        inp.last_received = stamp
        inp.queue.append((stamp, msg))
        self._process()
        while len(inp.queue) > self.queue_size:
            inp.queue.popleft()
            self._drop(index, "queue_overflow")
            self._process()

    def _drop(self, index: int, reason: str, count: int = 1) -> None:
        self._stats.dropped[index][reason] += count

    def _process(self, force: bool = False) -> None:
        """Make every decision the pending messages already determine (caller holds the lock); force: also the
        first one they do not (flush_stale)."""
        queues = [inp.queue for inp in self._inputs]
        while queues and all(queues):
            fronts = [q[0][0] for q in queues]
            pivot = max(range(len(fronts)), key=fronts.__getitem__)
            earliest = min(range(len(fronts)), key=fronts.__getitem__)
            if fronts[pivot] - fronts[earliest] > self.slop_ns:
                queues[earliest].popleft()
                self._drop(earliest, "no_partner")
                self._blocked_since = None
                continue
            chosen = self._best_set(fronts[pivot], force)
            if chosen is None:
                if self._blocked_since is None:
                    self._blocked_since = self.monotonic()
                return
            force = False
            self._blocked_since = None
            self._emit(chosen)
        self._blocked_since = None

    def _best_set(self, t_pivot: int, force: bool = False) -> list[int] | None:
        """Per-input queue indices of the best set containing the pivot, or None until that is final."""
        queues = [inp.queue for inp in self._inputs]
        idx = [0] * len(queues)
        best: list[int] = []
        best_spread = 0
        while True:
            stamps = [q[i][0] for q, i in zip(queues, idx, strict=True)]
            low = min(range(len(stamps)), key=stamps.__getitem__)
            start, end = stamps[low], max(stamps)
            if not best or end - start < best_spread:
                best, best_spread = list(idx), end - start
            if start >= t_pivot or end - t_pivot >= best_spread:
                return best
            idx[low] += 1
            if idx[low] < len(queues[low]):
                continue
            # Every remaining window starts after `last` and ends no earlier than each input's first message
            # after it: one already queued, or a future one (no earlier than last received + lower bound).
            last = queues[low][-1][0]
            bound = max(t_pivot, self._inputs[low].last_received + self.lower_bound_ns(low))
            for k, q in enumerate(queues):
                if k != low:
                    later = next((s for s, _ in itertools.islice(q, idx[k], None) if s > last), None)
                    if later is not None:
                        bound = max(bound, later)
                    elif self.lower_bound_ns(k) > 0:
                        bound = max(bound, self._inputs[k].last_received + self.lower_bound_ns(k))
            return best if force or bound - t_pivot >= best_spread else None

    def _emit(self, chosen: list[int]) -> None:
        msgs = []
        stamps = []
        for j, (inp, i) in enumerate(zip(self._inputs, chosen, strict=True)):
            for _ in range(i):
                inp.queue.popleft()
            stamp, msg = inp.queue.popleft()
            superseded = i
            while inp.queue and inp.queue[0][0] <= stamp:
                inp.queue.popleft()
                superseded += 1
            if superseded:
                self._drop(j, "superseded", superseded)
            inp.last_emitted = stamp
            msgs.append(msg)
            stamps.append(stamp)
        self._stats.emitted += 1
        self._stats.last_spread_s = (max(stamps) - min(stamps)) / NS_PER_S
        self._outbox.append(tuple(msgs))

    def _dispatch(self) -> None:
        """Run callbacks for queued sets, outside the state lock, one thread at a time, in order."""
        while True:
            if not self._dispatch_lock.acquire(blocking=False):
                return  # another thread (or an outer frame of this one) is dispatching and will see ours
            try:
                while True:
                    with self._lock:
                        if not self._outbox:
                            break
                        msgs = self._outbox.popleft()
                    self.signalMessage(*msgs)
            finally:
                self._dispatch_lock.release()
            with self._lock:
                if not self._outbox:
                    return


class TimeSynchronizer(ApproximateTimeSynchronizer):
    """Emits sets whose stamps are exactly equal (message_filters.TimeSynchronizer): slop 0."""

    def __init__(self, fs: Sequence[SimpleFilter], queue_size: int) -> None:
        super().__init__(fs, queue_size, slop=0.0)
