"""`dig2dig`: fuse image files from the command line (no ROS needed).

    dig2dig fuse SRC1 SRC2 [SRC...] -o OUT.png [--task vif|mef|mff] [--method dig|static|...] [--steps N]
                 [--prior NAME] [--max-side N] [--seed S] [--weights-dir DIR] [--device D] [--resize POLICY]
                 [--ir-homography H] [--ir-normalization percentile|fixed] [--ir-range LOW,HIGH]
    dig2dig fuse-dir --data DIR --out DIR [--sequence] [same options]   # DIR/{ir,vis}/<stem>.* pairs
    dig2dig calibrate POINTS.txt [-o H.txt]                   # H from >= 4 'x_ir y_ir x_vis y_vis' lines
    dig2dig prior-eval --images DIR [--prior NAME] [--t 100,300,500,700]
    dig2dig demo [--out DIR]                                  # fuses the shipped synthetic sample
    dig2dig eval --data DIR [--method NAME ...] [--fused DIR] [--out report.md]   # metrics table
    dig2dig plot-dig SRC1 SRC2 -o fig.png [--prior NAME] [--steps N]            # cumulative DIG by region

Bad input gets one error line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from dig2dig_ros.commands import prior_eval as prior_eval_cmd
from dig2dig_ros.commands.options import (
    USER_ERRORS,
    add_fusion_options,
    add_infrared_options,
    build_fuser,
    prepare_sources,
)
from dig2dig_ros.core import imaging
from dig2dig_ros.core.fusion import Fuser, FusionError, FusionResult
from dig2dig_ros.core.registration import estimate_homography, format_homography
from dig2dig_ros.core.video import VideoFuser


def write_image(path: Path, img: np.ndarray) -> None:
    """Write an image, creating folders; raise OSError when it cannot be written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), img):
        raise OSError(f"cannot write {path}")


def write_weights(folder: Path, result: FusionResult) -> list[Path]:
    """DIR/weight_<k>.png: the final weight of source k in [0,1] as 8-bit 0..255, at the output size."""
    if result.weights is None:
        raise FusionError("this method has no weight maps (only dig and static do)")
    paths = []
    for k, weight in enumerate(result.weights):
        path = folder / f"weight_{k}.png"
        write_image(path, imaging.to_uint8(weight))
        paths.append(path)
    return paths


def cmd_fuse(args: argparse.Namespace) -> int:
    if len(args.sources) < 2:
        raise FusionError(f"need at least two source images, got {len(args.sources)}")
    images = [imaging.read_image(p) for p in args.sources]
    result = fuse_sources(build_fuser(args), args, images)
    write_image(Path(args.output), result.fused)
    print(f"wrote {args.output} ({result.fused.shape[1]}x{result.fused.shape[0]}, {result.seconds:.2f} s)")
    if args.weights_dir:
        for path in write_weights(Path(args.weights_dir), result):
            print(f"wrote {path}")
    return 0


def fuse_sources(fuser: Fuser | VideoFuser, args: argparse.Namespace, images: list[np.ndarray],
                 stamp: float | None = None) -> FusionResult:
    """Normalise and register the infrared source as the node does, then fuse (a video frame when given a
    VideoFuser: warm-started from the previous one)."""
    images, valid = prepare_sources(args, images)
    if isinstance(fuser, VideoFuser):
        return fuser(images, stamp=stamp, valid=valid)
    return fuser(images, valid=valid)


def find_pairs(data: Path) -> list[tuple[str, Path, Path]]:
    """(stem, ir path, vis path) for every stem present in both DIR/ir and DIR/vis."""
    if not (data / "ir").is_dir() or not (data / "vis").is_dir():
        raise FusionError(f"{data} must contain ir/ and vis/ folders")

    def index(folder: Path) -> dict[str, Path]:
        return {p.stem: p for p in sorted(folder.iterdir()) if p.suffix.lower() in imaging.IMAGE_SUFFIXES}

    ir, vis = index(data / "ir"), index(data / "vis")
    stems = sorted(set(ir) & set(vis))
    if not stems:
        raise FusionError(f"no image pairs with matching names in {data}/ir and {data}/vis")
    return [(s, ir[s], vis[s]) for s in stems]


def cmd_fuse_dir(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    pairs = find_pairs(Path(args.data))
    if args.sequence:  # consecutive frames, sorted by name: video mode on, one frame interval apart
        args.set = [*args.set, "video.enabled=true"]
    fuser = VideoFuser(build_fuser(args)) if args.sequence else build_fuser(args)
    out = Path(args.out)
    warm = 0
    for i, (stem, ir_path, vis_path) in enumerate(tqdm(pairs, desc="fusing", unit="pair")):
        result = fuse_sources(fuser, args, [imaging.read_image(ir_path), imaging.read_image(vis_path)],
                              stamp=i / args.fps)
        warm += isinstance(fuser, VideoFuser) and fuser.last_reason == "warm"
        write_image(out / f"{stem}.png", result.fused)
    print(f"wrote {len(pairs)} fused images to {out}" + (f" ({warm} warm-started)" if args.sequence else ""))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from dig2dig_ros.core.sample_scene import make_sample_pair

    out = Path(args.out)
    ir, vis = make_sample_pair()
    result = build_fuser(args)([ir, vis])
    files = {
        "sample_ir.png": ir, "sample_visible.png": vis, "fused.png": result.fused,
        "dig_overlay.png": imaging.weight_overlay(result.fused, result.weights[0]),
    }
    for name, img in files.items():
        write_image(out / name, img)
    weights = write_weights(out, result)
    print(f"fused the shipped synthetic night-street sample ({ir.shape[1]}x{ir.shape[0]}) with "
          f"{args.method}, prior {args.prior}, {args.steps} steps, in {result.seconds:.2f} s "
          f"({result.prior_calls} prior calls)")
    print(f"mean weight: infrared {result.weights[0].mean():.2f}, visible {result.weights[1].mean():.2f}")
    for name in [*files, *(p.name for p in weights)]:
        print(f"wrote {out / name}")
    return 0


def cmd_calibrate(args: argparse.Namespace) -> int:
    """H (infrared → visible) from point pairs: one `x_ir y_ir x_vis y_vis` per line, at least four."""
    rows = []
    for number, line in enumerate(Path(args.points).read_text().splitlines(), start=1):
        fields = line.split("#", 1)[0].replace(",", " ").split()
        if not fields:
            continue
        if len(fields) != 4:
            raise ValueError(f"{args.points}:{number}: expected 'x_ir y_ir x_vis y_vis', got {line.strip()!r}")
        rows.append([float(f) for f in fields])
    points = np.asarray(rows, np.float64).reshape(-1, 4)
    h, rms = estimate_homography(points[:, :2], points[:, 2:])
    text = format_homography(h)
    if args.output:
        Path(args.output).write_text(text + "\n")
        print(f"wrote {args.output}")
    print(text)
    print(f"{len(points)} point pairs, RMS reprojection error {rms:.2f} px (visible)", file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dig2dig", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    fuse = sub.add_parser("fuse", help="fuse two or more source images")
    fuse.add_argument("sources", nargs="+", help="source images (VIF: infrared then visible)")
    fuse.add_argument("-o", "--output", required=True, help="fused image path")
    fuse.add_argument("--weights-dir", help="also write the final DIG weights as DIR/weight_<k>.png")
    add_fusion_options(fuse)
    add_infrared_options(fuse)
    fuse.set_defaults(func=cmd_fuse)

    fuse_dir = sub.add_parser("fuse-dir", help="fuse every DIR/ir, DIR/vis pair")
    fuse_dir.add_argument("--data", required=True)
    fuse_dir.add_argument("--out", required=True)
    fuse_dir.add_argument("--sequence", action="store_true",
                          help="the pairs are consecutive video frames (sorted by name): video mode, each frame "
                               "warm-started from the previous one (core/video.py)")
    fuse_dir.add_argument("--fps", type=float, default=25.0, help="frame rate of --sequence (for the time-gap check)")
    add_fusion_options(fuse_dir)
    add_infrared_options(fuse_dir)
    fuse_dir.set_defaults(func=cmd_fuse_dir)

    calibrate = sub.add_parser("calibrate", help="infrared → visible homography from point pairs (>= 4)")
    calibrate.add_argument("points", help="text file: one 'x_ir y_ir x_vis y_vis' per line")
    calibrate.add_argument("-o", "--output", help="also write H (9 numbers) to this file, for --ir-homography")
    calibrate.set_defaults(func=cmd_calibrate)

    prior_eval = sub.add_parser("prior-eval", help="PSNR of a prior's x0 estimate at several noise levels")
    prior_eval_cmd.build_parser(prior_eval)
    prior_eval.set_defaults(func=prior_eval_cmd.run)

    demo = sub.add_parser("demo", help="fuse the shipped synthetic sample and write the results")
    demo.add_argument("--out", default="demo_output")
    add_fusion_options(demo)
    demo.set_defaults(func=cmd_demo)

    from dig2dig_ros.commands import evaluate, plot_dig

    evaluation = sub.add_parser("eval", help="fusion metrics of one or more methods over a dataset folder")
    evaluate.add_arguments(evaluation)
    evaluation.set_defaults(func=evaluate.run)

    plot = sub.add_parser("plot-dig", help="cumulative DIG of a few regions against the noise level (Fig. 5)")
    plot_dig.add_arguments(plot)
    plot.set_defaults(func=plot_dig.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except USER_ERRORS as exc:
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"dig2dig: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
