"""What every dig2dig node shares: start-up errors, parameter descriptors, the newest-wins worker (and its
two-stage pipelined form), diagnostics, and the run-until-shutdown entry."""

from __future__ import annotations

import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any

import rclpy
import rclpy.task
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
from rclpy.clock import Clock, ClockType
from rclpy.node import Node
from rclpy.signals import SignalHandlerOptions

from dig2dig_ros.ros.params import ParamSpec


class StartupError(RuntimeError):
    """A configuration that cannot start (unknown prior, missing model or checkpoint, bad parameter)."""


def descriptor(spec: ParamSpec) -> ParameterDescriptor:
    """A ParameterDescriptor with the spec's description, choices, range and read-only flag."""
    text = spec.description + (f" ({', '.join(spec.choices)})" if spec.choices else "")
    desc = ParameterDescriptor(name=spec.name, description=text, read_only=spec.read_only)
    if isinstance(spec.default, list) or spec.dynamic:
        desc.dynamic_typing = True  # e.g. class names (strings) or ids (integers)
    elif spec.low is not None and isinstance(spec.default, int) and not isinstance(spec.default, bool):
        desc.integer_range = [IntegerRange(from_value=int(spec.low), to_value=int(spec.high), step=1)]
    elif spec.low is not None and isinstance(spec.default, float):
        desc.floating_point_range = [FloatingPointRange(from_value=float(spec.low), to_value=float(spec.high))]
    return desc


def run_node(factory: Callable[[], Node], program: str, argv: list[str] | None = None) -> int:
    """Create the node and spin until shutdown; a StartupError prints one `program: error:` line and returns 1.

    The node may define ``stop()`` (join its worker) which runs before it is destroyed. rclpy's own signal
    handlers are off: SIGINT and SIGTERM complete a future the spin waits on, so the spin ends between two
    callbacks (nothing is interrupted mid-call) and ``stop()`` runs while the context is still valid.
    """
    rclpy.init(args=argv if argv is not None else sys.argv, signal_handler_options=SignalHandlerOptions.NO)
    stopped = rclpy.task.Future()  # completed by SIGINT/SIGTERM: the spin ends between two callbacks

    def request_stop(signum: int, frame: Any) -> None:
        if not stopped.done():
            stopped.set_result(signum)

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    node = None
    try:
        try:
            node = factory()
        except StartupError as exc:
            print(f"{program}: error: {exc}", file=sys.stderr)
            return 1
        if not stopped.done():
            rclpy.spin_until_future_complete(node, stopped)
    except (KeyboardInterrupt, rclpy.executors.ExternalShutdownException):
        pass
    finally:
        if node is not None:
            if hasattr(node, "stop"):
                node.stop()
            node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0


class NewestWorker:
    """Runs ``handle(item)`` on a worker thread for the newest submitted item: an item submitted while another
    still waits replaces it (newest wins), so nothing queues without bound. ``submit`` says whether it did.

    An exception that escapes ``handle`` goes to ``on_error(exc)`` (the node counts it as failed); without one
    its traceback is printed. The worker outlives either.
    """

    def __init__(self, handle: Callable[[Any], None], name: str,
                 on_error: Callable[[Exception], None] | None = None) -> None:
        self._handle = handle
        self._on_error = on_error
        self._wake = threading.Condition()
        self._item: Any = None
        self._waiting = False
        self._running = True
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, item: Any) -> bool:
        """Hand over the newest item; True when it replaced one that was still waiting (a drop)."""
        with self._wake:
            replaced = self._waiting
            self._item, self._waiting = item, True
            self._wake.notify()
        return replaced

    def stop(self, timeout: float = 10.0) -> bool:
        """Stop after the item in progress; a waiting item is discarded. False when the thread is still running
        after ``timeout`` seconds (the item in progress did not return)."""
        with self._wake:
            self._running = False
            self._wake.notify_all()
        self._thread.join(timeout=timeout)
        return not self._thread.is_alive()

    def _run(self) -> None:
        while True:
            with self._wake:
                while not self._waiting and self._running:
                    self._wake.wait(timeout=0.5)
                if not self._running:
                    return
                item, self._item, self._waiting = self._item, None, False
            try:
                self._handle(item)
            except Exception as exc:  # noqa: BLE001 - the worker must outlive any error
                self._report(exc)

    def _report(self, exc: Exception) -> None:
        if self._on_error is None:
            traceback.print_exc()
            return
        try:
            self._on_error(exc)
        except Exception:  # noqa: BLE001 - an error handler that fails must not end the worker either
            traceback.print_exc()


class TwoStageWorker(NewestWorker):
    """A frame in two halves on two threads: ``front(item)`` runs for the newest submitted item as NewestWorker's
    ``handle`` does (newest wins; ``submit`` says when it replaced one), and returns what the back half needs, or
    None (nothing to finish); ``back(that)`` runs on a second thread for every front result, in order, so the
    front of frame t+1 runs while the back of frame t does.

    The hand-over holds one result: a front that finishes while the back is still busy waits (back-pressure: the
    newest-wins slot absorbs what arrives meanwhile, counted as drops), and nothing is dropped between the halves.
    With ``pipelined`` False the back runs right after the front on the front's thread (one frame at a time).
    An exception that escapes either half goes to ``on_error``; neither thread ends on one.
    """

    def __init__(self, front: Callable[[Any], Any], back: Callable[[Any], None], name: str,
                 on_error: Callable[[Exception], None] | None = None, pipelined: bool = True) -> None:
        self._front, self._back, self.pipelined = front, back, pipelined
        self._hand = threading.Condition()
        self._handed: Any = None  # the front result the back has not finished yet
        self._handed_set = False
        self._back_running = True
        self._back_thread = threading.Thread(target=self._run_back, name=f"{name}_back", daemon=True)
        super().__init__(self._run_front, name, on_error)
        if pipelined:
            self._back_thread.start()

    def alive(self) -> bool:
        """Whether any of the worker's threads still runs."""
        return self._thread.is_alive() or self._back_thread.is_alive()

    def stop(self, timeout: float = 10.0) -> bool:
        """Stop after the halves in progress; a waiting item and a front result not yet taken are discarded. False
        when a thread is still running after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        with self._hand:
            self._back_running = False
            self._hand.notify_all()
        front = super().stop(timeout)
        if self._back_thread.is_alive():
            self._back_thread.join(timeout=max(0.0, deadline - time.monotonic()))
        return front and not self._back_thread.is_alive()

    def _run_front(self, item: Any) -> None:
        out = self._front(item)
        if out is None:
            return
        if not self.pipelined:
            self._back(out)
            return
        with self._hand:
            while self._handed_set and self._back_running:  # the back is still busy with the last one
                self._hand.wait(timeout=0.5)
            if not self._back_running:
                return  # stopping: nothing more is finished
            self._handed, self._handed_set = out, True
            self._hand.notify_all()

    def _run_back(self) -> None:
        while True:
            with self._hand:
                while not self._handed_set and self._back_running:
                    self._hand.wait(timeout=0.5)
                if not self._back_running:
                    return
                out = self._handed
            try:
                self._back(out)
            except Exception as exc:  # noqa: BLE001 - the worker must outlive any error
                self._report(exc)
            finally:
                with self._hand:  # only now may the front hand over the next one
                    self._handed, self._handed_set = None, False
                    self._hand.notify_all()


class CountsFailures:
    """For a node with ``lock``, ``counts["failed"]`` and ``last_failure``: a fault of ours (not of the frame) is
    counted as failed, kept with its time for /diagnostics, and logged (throttled)."""

    def _failed(self, exc: Exception, what: str = "publishing failed") -> None:
        text = f"{what}: {exc}" if str(exc) else f"{what}: {type(exc).__name__}"
        with self.lock:
            self.counts["failed"] += 1
            self.last_failure = (time.monotonic(), text)
        self.get_logger().error(f"{text} (frame skipped)", throttle_duration_sec=5.0)


def steady_timer(node: Node, period: float, callback: Callable[[], None]) -> Any:
    """A timer on the steady clock: it keeps firing when simulated time (/clock) stops, e.g. after a bag ends."""
    return node.create_timer(period, callback, clock=Clock(clock_type=ClockType.STEADY_TIME))


def diagnostics(node: Node, name: str, level: bytes, message: str, values: dict[str, Any]) -> DiagnosticArray:
    """A /diagnostics message with one status for this node; floats shown with two decimals."""
    status = DiagnosticStatus(
        level=level, name=f"{node.get_fully_qualified_name()}: {name}", message=message,
        hardware_id=node.get_name(),
        values=[KeyValue(key=k, value=f"{v:.2f}" if isinstance(v, float) else str(v)) for k, v in values.items()])
    msg = DiagnosticArray(status=[status])
    msg.header.stamp = node.get_clock().now().to_msg()
    return msg
