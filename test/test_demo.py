"""The one-command demo: bag → graph → recorded outputs, with every fused frame carrying its input stamp."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import cv2
import pytest

pytest.importorskip("rclpy")

from dig2dig_ros.bags.bag import read_images  # noqa: E402


def _run_demo(tmp_path, *extra: str) -> tuple[subprocess.CompletedProcess, dict]:
    env = {**os.environ, "ROS_DOMAIN_ID": str(1 + os.getpid() % 99), "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST"}
    out = tmp_path / "demo"
    cmd = [sys.executable, "-m", "dig2dig_ros.commands.ros_cli", "demo", "--out", str(out), "--settle", "4", *extra]
    proc = subprocess.run([*cmd, "prior:=wiener", "working_size:=96"],
                          env=env, capture_output=True, text=True, timeout=400)
    summary = json.loads((out / "summary.json").read_text()) if (out / "summary.json").exists() else {}
    return proc, summary


def test_demo_on_the_shipped_sample(tmp_path):
    proc, summary = _run_demo(tmp_path, "--frames", "6")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert summary["frames_in"] == 6 and 1 <= summary["frames_fused"] <= 6
    assert summary["dropped"] == 6 - summary["frames_fused"]
    sheet = cv2.imread(str(tmp_path / "demo" / "contact_sheet.png"))
    assert sheet is not None and sheet.shape[0] == 160 * min(summary["frames_fused"], 8)
    assert len(list((tmp_path / "demo" / "frames").glob("*_fused.png"))) == summary["frames_fused"]


def test_demo_replays_real_llvip_pairs_with_their_stamps(shared_data, tmp_path):
    proc, summary = _run_demo(tmp_path, "--llvip", str(shared_data / "vif" / "llvip"), "--frames", "10",
                              "--play-rate", "0.2")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    inputs = {r.stamp_ns for r in read_images(tmp_path / "demo" / "input_bag", ["/visible/image"])}
    fused = list(read_images(tmp_path / "demo" / "output_bag", ["/fused/image"]))
    assert len(inputs) == 10 and summary["frames_fused"] == len(fused) >= 1
    assert {r.stamp_ns for r in fused} <= inputs  # every output carries its input's stamp
    assert all(r.image.shape == (1024, 1280, 3) for r in fused)
    counters = summary["node_counters"]
    assert counters["pairs"] == 10 and counters["fused"] + counters["dropped_busy"] == 10
