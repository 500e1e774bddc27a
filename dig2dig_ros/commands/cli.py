"""`dig2dig`: fuse image files from the command line (no ROS needed).

    dig2dig fuse SRC1 SRC2 [SRC...] -o OUT.png [--task vif|mef|mff] [--method dig|static|...] [--steps N]
                 [--prior NAME] [--max-side N] [--seed S] [--weights-dir DIR] [--device D] [--resize POLICY]
                 [--ir-homography H] [--ir-normalization percentile|fixed] [--ir-range LOW,HIGH]
    dig2dig fuse-dir --data DIR --out DIR [--sequence] [same options]   # DIR/{ir,vis}/<stem>.* pairs
    dig2dig calibrate POINTS.txt [-o H.txt]                   # H from >= 4 'x_ir y_ir x_vis y_vis' lines
    dig2dig calibrate --auto (--data DIR | --bag BAG) [-o H.txt] [--pairs N]   # H from the images themselves
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
from dig2dig_ros.core.frame import imaging
from dig2dig_ros.core.frame.fusion import Fuser, FusionError, FusionResult
from dig2dig_ros.core.frame.homography_estimate import (
    EstimateSettings,
    check_quality,
    estimate_from_pairs,
    initial_homography,
    spread,
)
from dig2dig_ros.core.frame.registration import estimate_homography, format_homography
from dig2dig_ros.core.video.fuser import VideoFuser, fuse_pipelined


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


def fuse_sources(fuser: Fuser, args: argparse.Namespace, images: list[np.ndarray]) -> FusionResult:
    """Normalise and register the infrared source as the node does, then fuse."""
    images, valid = prepare_sources(args, images)
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
    out = Path(args.out)
    if args.sequence:  # on two threads, as the node: reading and the front half | the back half and writing
        video, warm = VideoFuser(build_fuser(args), balance=True), []

        def frames():
            for i, (_, ir_path, vis_path) in enumerate(tqdm(pairs, desc="fusing", unit="pair")):
                images, valid = prepare_sources(args, [imaging.read_image(ir_path), imaging.read_image(vis_path)])
                yield images, i / args.fps, valid
                warm.append(video.last_reason == "warm")  # the front of frame i has run

        def write(i: int, result: FusionResult) -> None:
            write_image(out / f"{pairs[i][0]}.png", result.fused)

        fuse_pipelined(video, frames(), write)
        print(f"wrote {len(pairs)} fused images to {out} ({sum(warm)} warm-started)")
        return 0
    fuser = build_fuser(args)
    for stem, ir_path, vis_path in tqdm(pairs, desc="fusing", unit="pair"):
        result = fuse_sources(fuser, args, [imaging.read_image(ir_path), imaging.read_image(vis_path)])
        write_image(out / f"{stem}.png", result.fused)
    print(f"wrote {len(pairs)} fused images to {out}")
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
    """H (infrared → visible) from point pairs: one `x_ir y_ir x_vis y_vis` per line, at least four; with
    --auto, from image pairs (a folder or a bag)."""
    if args.auto:
        return cmd_calibrate_auto(args)
    if not args.points or args.data or args.bag:
        raise ValueError("calibrate takes POINTS.txt, or --auto with --data DIR or --bag BAG")
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


def bag_pairs(path: str, ir_topic: str, vis_topic: str, count: int, slop: float
              ) -> tuple[list[tuple[str, np.ndarray, np.ndarray]], np.ndarray | None, np.ndarray | None]:
    """Up to count synchronised (ApproximateTime, slop s) infrared/visible pairs spread over a bag, named by
    stamp, and the cameras' intrinsics K (3×3) from `<camera>/camera_info` when the bag has them."""
    from types import SimpleNamespace

    from dig2dig_ros.bags.bag import BagError, bag_topics, deserialize_image, read_images, read_messages, typestore
    from dig2dig_ros.ros.sync import NS_PER_S, ApproximateTimeSynchronizer, SimpleFilter

    def norm(topic: str) -> str:
        return "/" + topic.lstrip("/")

    ir_topic, vis_topic = norm(ir_topic), norm(vis_topic)
    info = {t: t.rsplit("/", 1)[0] + "/camera_info" for t in (ir_topic, vis_topic)}
    have = {norm(t.name): t.msgtype for t in bag_topics(path)}
    info_topics = [i for i in info.values() if have.get(i) == "sensor_msgs/msg/CameraInfo"]
    matched: list[tuple[int, int]] = []
    sync = ApproximateTimeSynchronizer([SimpleFilter(), SimpleFilter()], queue_size=30, slop=slop)
    sync.registerCallback(lambda a, b: matched.append((a.ns, b.ns)))
    k: dict[str, np.ndarray] = {}
    for m in read_messages(path, [ir_topic, vis_topic, *info_topics]):
        topic = norm(m.topic)
        if m.msgtype == "sensor_msgs/msg/CameraInfo":
            msg = typestore().deserialize_cdr(m.raw, m.msgtype)
            if float(msg.k[0]) > 0:
                k.setdefault(topic, np.asarray(msg.k, np.float64).reshape(3, 3))
            continue
        stamp = deserialize_image(m.raw)[0]
        header = SimpleNamespace(stamp=SimpleNamespace(sec=stamp // NS_PER_S, nanosec=stamp % NS_PER_S))
        sync.add(SimpleNamespace(header=header, ns=stamp), 0 if topic == ir_topic else 1)
    while sync.flush_stale(0.0):  # the end of the recording: no later message will decide the last sets
        pass
    if not matched:
        raise BagError(f"bag {path}: no synchronised pairs on {ir_topic} and {vis_topic} within {slop} s")
    chosen = [matched[i] for i in spread(len(matched), count)]
    wanted = {0: {a for a, _ in chosen}, 1: {b for _, b in chosen}}
    images: dict[tuple[int, int], np.ndarray] = {}
    for rec in read_images(path, [ir_topic, vis_topic]):
        side = 0 if norm(rec.topic) == ir_topic else 1
        if rec.stamp_ns in wanted[side]:
            images[(side, rec.stamp_ns)] = rec.image
    pairs = [(f"{a / NS_PER_S:.3f}", images[(0, a)], images[(1, b)]) for a, b in chosen]
    return pairs, k.get(info[ir_topic]), k.get(info[vis_topic])


def cmd_calibrate_auto(args: argparse.Namespace) -> int:
    """H (infrared → visible) estimated from image pairs of the rig; refuses when they do not support it."""
    if bool(args.data) == bool(args.bag):
        raise ValueError("calibrate --auto needs exactly one of --data DIR or --bag BAG")
    if args.pairs < 1:
        raise ValueError(f"--pairs must be at least 1, got {args.pairs}")
    k_ir = k_vis = None
    if args.data:
        found = find_pairs(Path(args.data))
        pairs = [(stem, imaging.read_image(i), imaging.read_image(v))
                 for stem, i, v in (found[j] for j in spread(len(found), args.pairs))]
        source = f"{len(pairs)} of {len(found)} pairs in {args.data}"
    else:
        pairs, k_ir, k_vis = bag_pairs(args.bag, args.ir_topic, args.vis_topic, args.pairs, args.slop)
        source = f"{len(pairs)} synchronised pairs from {args.bag}"
    ir_size, vis_size = pairs[0][1].shape[:2], pairs[0][2].shape[:2]
    initial = initial_homography(ir_size, vis_size, k_ir, k_vis)
    start = "camera_info focal lengths" if k_ir is not None and k_vis is not None else "the size ratio"
    settings = EstimateSettings(max_pairs=args.pairs)
    estimate = estimate_from_pairs([(i, v) for _, i, v in pairs], [n for n, _, _ in pairs], initial, settings)
    check_quality(estimate, settings)  # raises EstimateRefused: one error line, nothing written
    for q in estimate.pairs:
        print(f"pair {q.name}: correlation {q.correlation:.3f}, residual {q.residual_px:.2f} px"
              f"{'' if q.inlier else ' (outlier, not used)'}", file=sys.stderr)
    print(f"{source}, {ir_size[1]}x{ir_size[0]} infrared -> {vis_size[1]}x{vis_size[0]} visible, started from "
          f"{start}: {estimate.inliers}/{len(estimate.pairs)} pairs agree, residual {estimate.residual_px:.2f} px "
          f"(visible), correlation {estimate.correlation:.3f}, overlap {estimate.overlap:.0%} of the infrared view, "
          f"{estimate.seconds:.1f} s", file=sys.stderr)
    text = format_homography(estimate.h)
    if args.output:
        Path(args.output).write_text(text + "\n")
        print(f"wrote {args.output}")
    print(text)
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
                               "warm-started from the previous one (core/video/fuser.py)")
    fuse_dir.add_argument("--fps", type=float, default=25.0, help="frame rate of --sequence (for the time-gap check)")
    add_fusion_options(fuse_dir)
    add_infrared_options(fuse_dir)
    fuse_dir.set_defaults(func=cmd_fuse_dir)

    calibrate = sub.add_parser("calibrate", help="infrared → visible homography from point pairs (>= 4), or "
                                                 "from the images themselves (--auto)")
    calibrate.add_argument("points", nargs="?", help="text file: one 'x_ir y_ir x_vis y_vis' per line")
    calibrate.add_argument("-o", "--output", help="also write H (9 numbers) to this file, for --ir-homography")
    calibrate.add_argument("--auto", action="store_true",
                           help="estimate H from image pairs of the rig (no target, no points): --data or --bag")
    calibrate.add_argument("--data", help="with --auto: folder with ir/<stem>.* and vis/<stem>.* pairs")
    calibrate.add_argument("--bag", help="with --auto: a rosbag2 recorded on the rig (synchronised pairs)")
    calibrate.add_argument("--pairs", type=int, default=24, help="with --auto: use at most N pairs, spread evenly")
    calibrate.add_argument("--ir-topic", default="/ir/image", help="with --bag: the infrared image topic")
    calibrate.add_argument("--vis-topic", default="/visible/image", help="with --bag: the visible image topic")
    calibrate.add_argument("--slop", type=float, default=0.05, help="with --bag: pair stamps within this many s")
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
