"""Person detection on LLVIP: visible vs infrared vs fused frames, one detector, one set of thresholds.

For each image source the same converted YOLOv5 model runs on LLVIP 010001–010050 and its `person` boxes are
matched to the VOC annotations (greedy by score, IoU ≥ --match-iou, each annotation used once). Sources:
visible, infrared, `average` (the classical average of the luminances with the visible chroma, computed here
through dig2dig_ros.core.frame.fusion.Fuser; a plain mean of the BGR frames when that is unavailable), and, with
--fused DIR, fused frames named <stem>.png/.jpg. Prints a Markdown table of precision / recall / F1.

    .venv/bin/python benchmarks/detection_eval.py --pt ../shared/data/weights/yolov5n.pt [--fused DIR] [--missed]

--missed also lists, per fused folder, the annotated people `average` finds and that folder misses, with the
score each source's matched detection has (0: missed).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from dig2dig_ros.core.detection import Detector, DetectorConfig, box_iou

REPO = Path(__file__).resolve().parents[1]
DEFAULT_LLVIP = REPO.parent / "shared" / "data" / "vif" / "llvip"


@dataclass
class Tally:
    """Matches of one image source over the whole set."""

    tp: int = 0
    fp: int = 0
    fn: int = 0
    seconds: float = 0.0
    frames: int = 0

    def row(self, name: str) -> str:
        p = self.tp / (self.tp + self.fp) if self.tp + self.fp else 0.0
        r = self.tp / (self.tp + self.fn) if self.tp + self.fn else 0.0
        f1 = 2 * p * r / (p + r) if p + r else 0.0
        ms = 1000 * self.seconds / max(self.frames, 1)
        cells = [name, self.frames, self.tp, self.fp, self.fn, f"{p:.3f}", f"{r:.3f}", f"{f1:.3f}", f"{ms:.0f}"]
        return "| " + " | ".join(str(c) for c in cells) + " |"


def read_persons(xml_path: Path) -> np.ndarray:
    """(N,4) xyxy `person` boxes of a VOC annotation."""
    root = ET.parse(xml_path).getroot()
    rows = [
        [float(obj.find("bndbox").findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax")]
        for obj in root.iter("object")
        if obj.findtext("name") == "person"
    ]
    return np.asarray(rows, dtype=np.float32).reshape(-1, 4)


def matched_scores(boxes: np.ndarray, scores: np.ndarray, truth: np.ndarray, iou: float) -> np.ndarray:
    """(G,) score of the detection matched to each annotation (G,4), 0 where none: score-ordered detections (N,4),
    each annotation used once."""
    got = np.zeros(len(truth), dtype=np.float32)  # (G,)
    if len(truth) == 0 or len(boxes) == 0:
        return got
    order = np.argsort(-scores, kind="stable")
    ious = box_iou(boxes[order], truth)  # (N,G)
    for score, row in zip(scores[order], ious, strict=True):
        row = np.where(got > 0, -1.0, row)
        j = int(row.argmax())
        if row[j] >= iou:
            got[j] = max(float(score), 1e-6)
    return got


def match(boxes: np.ndarray, scores: np.ndarray, truth: np.ndarray, iou: float) -> tuple[int, int, int]:
    """(tp, fp, fn) of score-ordered detections (N,4) against annotations (G,4), each annotation used once."""
    tp = int((matched_scores(boxes, scores, truth, iou) > 0).sum())
    return tp, len(boxes) - tp, len(truth) - tp


def average_fuser() -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """(ir, vis) BGR uint8 → fused BGR uint8 with the project's classical `average` (plain mean as fallback)."""
    try:
        from dig2dig_ros.core.config import FusionConfig
        from dig2dig_ros.core.frame.fusion import Fuser

        fuser = Fuser(FusionConfig(method="average"), device="cpu")
        return lambda ir, vis: fuser([ir, vis]).fused
    except (ImportError, ValueError) as exc:
        print(f"note: classical average unavailable ({exc}); using a plain mean of the frames", file=sys.stderr)
        return lambda ir, vis: ((ir.astype(np.uint16) + vis) // 2).astype(np.uint8)


def find_image(folder: Path, stem: str) -> Path | None:
    for ext in (".png", ".jpg", ".jpeg", ".bmp"):
        if (folder / f"{stem}{ext}").is_file():
            return folder / f"{stem}{ext}"
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", type=Path, help="converted model folder (dig2dig-convert-yolov5)")
    source.add_argument("--pt", type=Path, help="yolov5n.pt: converted into a temporary folder first")
    parser.add_argument("--llvip", type=Path, default=DEFAULT_LLVIP, help="folder with ir/, vis/, annotations/")
    parser.add_argument("--fused", type=Path, action="append", default=[], help="folder of fused <stem>.png/jpg")
    parser.add_argument("--first", type=int, default=10001)
    parser.add_argument("--last", type=int, default=10050)
    parser.add_argument("--confidence", type=float, default=0.25)
    parser.add_argument("--iou", type=float, default=0.45, help="NMS IoU")
    parser.add_argument("--match-iou", type=float, default=0.5)
    parser.add_argument("--input-size", type=int, default=640)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--missed", action="store_true",
                        help="also list, per --fused folder, the people `average` finds and that folder misses")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        model_dir = args.model
        if args.pt is not None:
            from dig2dig_ros.core.detection.convert import convert

            model_dir = convert(args.pt, Path(tmp) / "yolov5")
        cfg = DetectorConfig(
            model_path=str(model_dir), confidence=args.confidence, iou=args.iou, classes=["person"],
            device=args.device, input_size=args.input_size,
        )
        detector = Detector(cfg)
        fuse_average = average_fuser()
        sources = ["visible", "infrared", "average"] + [f"fused: {d.name}" for d in args.fused]
        tallies = {name: Tally() for name in sources}
        missed: dict[str, list[str]] = {name: [] for name in sources[3:]}  # "stem box: scores" lines
        for number in range(args.first, args.last + 1):
            stem = f"{number:06d}"
            xml = args.llvip / "annotations" / f"{stem}.xml"
            vis_path, ir_path = find_image(args.llvip / "vis", stem), find_image(args.llvip / "ir", stem)
            if not (xml.is_file() and vis_path and ir_path):
                print(f"note: {stem} skipped (missing annotation or image)", file=sys.stderr)
                continue
            truth = read_persons(xml)
            vis, ir = cv2.imread(str(vis_path)), cv2.imread(str(ir_path))  # (H,W,3) BGR
            frames = {"visible": vis, "infrared": ir, "average": fuse_average(ir, vis)}
            for folder in args.fused:
                path = find_image(folder, stem)
                if path is None:
                    print(f"note: no fused frame for {stem} in {folder}", file=sys.stderr)
                    continue
                frames[f"fused: {folder.name}"] = cv2.imread(str(path))
            found = {}  # source → (G,) matched scores
            for name, frame in frames.items():
                start = time.perf_counter()
                dets = detector(frame)
                tally = tallies[name]
                tally.seconds += time.perf_counter() - start
                tally.frames += 1
                found[name] = matched_scores(dets.boxes, dets.scores, truth, args.match_iou)
                tp = int((found[name] > 0).sum())
                tally.tp, tally.fp = tally.tp + tp, tally.fp + len(dets.boxes) - tp
                tally.fn += len(truth) - tp
            for name in missed.keys() & found.keys():
                for j in np.flatnonzero((found["average"] > 0) & (found[name] == 0)):
                    cells = ", ".join(f"{n} {found[n][j]:.2f}" for n in ("visible", "infrared", "average"))
                    missed[name].append(f"{stem} {truth[j].astype(int).tolist()}: {cells}")

    print(
        f"Person detection, LLVIP {args.first:06d}–{args.last:06d}, YOLOv5 input {args.input_size}, "
        f"confidence {args.confidence}, NMS IoU {args.iou}, match IoU {args.match_iou}, device {detector.device}\n"
    )
    print("| source | frames | TP | FP | FN | precision | recall | F1 | ms/frame |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, tally in tallies.items():
        print(tally.row(name))
    for name, lines in missed.items() if args.missed else ():
        print(f"\n{len(lines)} people `average` finds and {name} misses (stem [x0, y0, x1, y1]: matched scores, "
              "0 = missed):")
        print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
