"""The whole frame through Fuser on a CUDA device: float32 and the prior under fp16/bf16 autocast, with a check.

    PYTHONPATH=. python3 benchmarks/gpu_frame.py [--device cuda] [--sizes 512x640,1024x1280] [--steps 15,25]
        [--max-side 0,320] [--precisions fp32,fp16,bf16] [--repeats 5] [--prior bundled]
    PYTHONPATH=. python3 benchmarks/gpu_frame.py --device cpu --quick --threads 1  # the script runs (tiny size)

Needs python3 with torch, opencv, numpy and safetensors; no ROS and no install of this package (it imports
dig2dig_ros.core from the checkout and checks that no rclpy came with it). Without CUDA (and without
--device cpu) it says so and exits 0.

Rows, per input size (HxW of a synthetic moving night street, a new frame each call) and working size
(--max-side, 0 = the input size): DIG-15 and DIG-25 per frame, and video mode when dig2dig_ros.core.video.fuser
provides VideoFuser(Fuser(config, prior, device))(images, stamp) (its first frame, a full run, is the
warm-up; the timed frames follow it at 30 fps stamps; the row says how many were warm-started). Each row in
float32 (PyTorch's defaults: TF32 convolutions as printed) and with only the prior's forward under
torch.autocast in fp16 and bf16 (the sampler, DIG and guidance stay float32). ms/frame is the median of
--repeats frames after one warm-up frame, wall clock around the public call, which returns NumPy arrays (so
the GPU work is done).

Check: a low-precision row passes when its fused luminance, over the timed frames, differs from the float32
row's (same frames, same seed) by at most MAX_MEAN_DIFF grey levels (of 255) on average and MAX_P99_DIFF at
the 99th percentile. The exit status is 1 when an fp16 row fails (bf16 is reported, not enforced), else 0.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout, when PYTHONPATH is not set

import dig2dig_ros  # noqa: E402
from dig2dig_ros.core.config import FusionConfig  # noqa: E402
from dig2dig_ros.core.diffusion.priors import Prior, load_prior  # noqa: E402
from dig2dig_ros.core.frame.fusion import Fuser  # noqa: E402
from dig2dig_ros.core.sample_scene import make_sample_pair  # noqa: E402

MAX_MEAN_DIFF = 1.0  # grey levels (of 255): mean |fused_lowp − fused_fp32| allowed ...
MAX_P99_DIFF = 8.0  # ... and its 99th percentile
PRECISIONS = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}
ENFORCED = ("fp16",)  # precisions whose check sets the exit status
FPS = 30.0


class AutocastPrior(Prior):
    """Runs another prior's forward under torch.autocast(dtype); ε is returned in the input's dtype."""

    def __init__(self, inner: Prior, dtype: torch.dtype) -> None:
        super().__init__(inner.alphas_cumprod)
        self.inner, self.dtype = inner, dtype
        self.channels, self.multiple = inner.channels, inner.multiple

    def forward(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """ε̂ for x_t (B,C,H,W) at timesteps t (B,), the inner prior under autocast."""
        with torch.autocast(device_type=x_t.device.type, dtype=self.dtype):
            eps = self.inner(x_t, t)  # (B,C,H,W), float16/bfloat16 or float32
        return eps.to(x_t.dtype)

    def __getattr__(self, name: str):  # anything else the pipeline asks of a prior: the inner one's
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(super().__getattr__("inner"), name)


@dataclass
class Measured:
    """One row's timings, outputs and peak memory."""

    ms: list[float]
    luminance: list[np.ndarray]  # per timed frame (H,W) float32 in [0,1]
    peak_mib: float


def video_fuser_class() -> type | None:
    """dig2dig_ros.core.video.fuser.VideoFuser, or None when that module is not in this checkout."""
    try:
        from dig2dig_ros.core.video.fuser import VideoFuser
    except ModuleNotFoundError as exc:
        if exc.name == "dig2dig_ros.core.video.fuser":
            return None
        raise
    return VideoFuser


class VideoCall:
    """Calls a VideoFuser and keeps each frame's reason for a full run ("warm" when it was warm-started)."""

    def __init__(self, video: object) -> None:
        self.video, self.reasons = video, []

    def __call__(self, images: list[np.ndarray], stamp: float) -> object:
        result = self.video(images, stamp)
        self.reasons.append(getattr(self.video, "last_reason", "?"))
        return result


def make_call(mode: str, config: FusionConfig, prior: Prior, device: str) -> Callable[[list, float], object]:
    """A per-frame callable (images, stamp) → FusionResult for modes 'blend'/'frame' (Fuser) or 'video'
    (VideoFuser)."""
    if mode.endswith("video"):
        return VideoCall(video_fuser_class()(Fuser(config, prior=prior, device=device)))
    fuser = Fuser(config, prior=prior, device=device)
    return lambda images, stamp: fuser(images)


def measure(call: Callable, frames: list[list[np.ndarray]], device: torch.device) -> Measured:
    """Warm up on frames[0], then time each later frame."""
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats(device)
    call(frames[0], 0.0)
    ms, lum = [], []
    for i, images in enumerate(frames[1:], start=1):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        result = call(images, i / FPS)
        if device.type == "cuda":
            torch.cuda.synchronize()
        ms.append(1000 * (time.perf_counter() - start))
        lum.append(np.asarray(result.luminance, dtype=np.float32))
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else float("nan")
    return Measured(ms=ms, luminance=lum, peak_mib=peak)


def difference(a: list[np.ndarray], b: list[np.ndarray]) -> tuple[float, float]:
    """(mean, 99th percentile) of |a − b| over all frames, in grey levels of 255."""
    d = np.concatenate([np.abs(x - y).ravel() for x, y in zip(a, b, strict=True)]) * 255.0
    return float(d.mean()), float(np.percentile(d, 99))


def parse_sizes(text: str) -> list[tuple[int, int]]:
    """'512x640,1024x1280' → [(512, 640), (1024, 1280)] (H, W)."""
    return [tuple(int(v) for v in s.lower().split("x")) for s in text.split(",") if s]


def main(argv: list[str] | None = None) -> int:
    """Print the table; exit 1 when an enforced precision fails its check."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--sizes", default="512x640,1024x1280", help="input sizes HxW")
    p.add_argument("--steps", default="15,25", help="DIG-N of the per-frame rows")
    p.add_argument("--max-side", default="0,320", help="working sizes (0: the input size)")
    p.add_argument("--precisions", default="fp32,fp16,bf16")
    p.add_argument("--repeats", type=int, default=5, help="timed frames per row, after one warm-up frame")
    p.add_argument("--prior", default="bundled")
    p.add_argument("--no-video", action="store_true", help="skip the video-mode rows")
    p.add_argument("--quick", action="store_true", help="64x96 input, DIG-15, 2 frames: a smoke test")
    p.add_argument("--threads", type=int, default=0, help="CPU threads for torch and OpenCV (0: their defaults)")
    args = p.parse_args(argv)

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print(
            f"no CUDA device (torch {torch.__version__}, built for CUDA {torch.version.cuda}): nothing measured. "
            "Run this on a machine with a GPU, or --device cpu --quick to check the script."
        )
        return 0
    leaked = sorted(m for m in sys.modules if m == "rclpy" or m.startswith("rclpy."))
    if leaked:
        print(f"warning: importing dig2dig_ros.core pulled in {leaked}")
    if args.quick:
        args.sizes, args.steps, args.max_side, args.repeats = "64x96", "15", "0", 2
    if args.threads > 0:
        import cv2

        torch.set_num_threads(args.threads)
        cv2.setNumThreads(args.threads)
    device = torch.device(args.device)
    precisions = [s for s in args.precisions.split(",") if s]
    bad = [s for s in precisions if s not in PRECISIONS]
    if bad or "fp32" not in precisions:
        print(f"--precisions must include fp32 and be among {list(PRECISIONS)}, got {precisions}")
        return 2
    torch.backends.cudnn.benchmark = True  # fixed frame sizes: let cuDNN pick its fastest kernels

    inner = load_prior(args.prior, device).eval()
    priors = {s: inner if PRECISIONS[s] is None else AutocastPrior(inner, PRECISIONS[s]) for s in precisions}
    modes = [("blend", 15)] + [("frame", int(n)) for n in args.steps.split(",") if n]
    video = video_fuser_class() is not None and not args.no_video
    if video:
        modes += [("blend-video", 15), ("video", 15)]

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(
        f"device {name}; torch {torch.__version__}, CUDA {torch.version.cuda}; prior {args.prior}; "
        f"TF32 convolutions {torch.backends.cudnn.allow_tf32}, TF32 matmul {torch.backends.cuda.matmul.allow_tf32}; "
        f"rclpy imported: {'yes' if leaked else 'no'}; package {Path(dig2dig_ros.__file__).resolve().parent}"
    )
    if not video:
        print(
            "video mode: "
            + ("skipped (--no-video)" if args.no_video else "dig2dig_ros.core.video.fuser not in this checkout")
        )
    print(
        f"check: mean |diff| <= {MAX_MEAN_DIFF} and p99 <= {MAX_P99_DIFF} grey levels against fp32 "
        f"(enforced for {', '.join(ENFORCED)})\n"
    )
    print("| input | working | mode | precision | ms/frame | x fp32 | peak MiB | mean diff | p99 diff | check |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    failed = False
    for h, w in parse_sizes(args.sizes):
        frames = [list(make_sample_pair(frame=i, size=(h, w))) for i in range(args.repeats + 1)]
        for max_side in (int(v) for v in args.max_side.split(",") if v):
            for mode, steps in modes:
                config = FusionConfig()  # the node's defaults, then the row's method
                config.max_side, config.sampler.steps = max_side, steps
                config.method = "dig-blend" if mode.startswith("blend") else "dig"
                config.video.enabled = mode.endswith("video")
                label = "dig-blend (node default)" if mode == "blend" else f"DIG-{steps}"
                reference: Measured | None = None
                for prec in precisions:
                    call = make_call(mode, config, priors[prec], args.device)
                    got = measure(call, frames, device)
                    if isinstance(call, VideoCall):  # the timed frames: all but the first
                        what = "dig-blend" if mode == "blend-video" else f"DIG-{steps}"
                        label = f"video {what}, {call.reasons[1:].count('warm')}/{len(call.reasons) - 1} warm"
                    ms = statistics.median(got.ms)
                    if prec == "fp32":
                        reference, diff, verdict = got, "", ""
                        speed = "1.00"
                    else:
                        mean_d, p99_d = difference(got.luminance, reference.luminance)
                        ok = mean_d <= MAX_MEAN_DIFF and p99_d <= MAX_P99_DIFF
                        failed |= (not ok) and prec in ENFORCED
                        diff, verdict = f"{mean_d:.3f} | {p99_d:.2f}", "pass" if ok else "FAIL"
                        speed = f"{ms / statistics.median(reference.ms):.2f}"
                    cells = [
                        f"{w}x{h}",
                        str(max_side or "input"),
                        label,
                        prec,
                        f"{ms:.1f}",
                        speed,
                        f"{got.peak_mib:.0f}",
                        diff or " | ",
                        verdict,
                    ]
                    print("| " + " | ".join(cells) + " |", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
