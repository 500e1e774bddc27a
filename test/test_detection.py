"""Detection core: letterbox, head decoding, NMS and selection on hand-made tensors; our YOLOv5 definition and
model format; the converter's refusals; and the converted yolov5n on a real LLVIP frame (when ../shared exists).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from dig2dig_ros.core.detection import (
    Detections,
    Detector,
    DetectorConfig,
    Letterbox,
    ModelFormatError,
    YoloV5,
    YoloV5Config,
    batched_nms,
    box_iou,
    decode_head,
    letterbox,
    load_model,
    nms,
    resolve_classes,
    save_model,
    scale_boxes,
    select,
)
from dig2dig_ros.core.detection import convert as conv

TINY = dict(nc=2, names=["person", "car"], depth_multiple=0.33, width_multiple=0.0625)


def voc_boxes(xml_path: Path, name: str = "person") -> np.ndarray:
    """(N,4) xyxy boxes of one class from a VOC annotation."""
    root = ET.parse(xml_path).getroot()
    rows = [
        [float(obj.find("bndbox").find(k).text) for k in ("xmin", "ymin", "xmax", "ymax")]
        for obj in root.iter("object")
        if obj.findtext("name") == name
    ]
    return np.asarray(rows, dtype=np.float32).reshape(-1, 4)


# ----------------------------------------------------------------------------------------------- letterbox
def test_letterbox_keeps_aspect_pads_grey_to_stride_and_boxes_round_trip():
    img = np.full((100, 150, 3), 7, np.uint8)  # (H,W,3)
    out, lb = letterbox(img, size=64, stride=32, auto=True)
    assert out.shape == (64, 64, 3)  # 150→64 wide, 100→43 high, padded to 64
    assert lb.ratio == pytest.approx(64 / 150)
    assert lb.pad == (0.0, 10.0)  # 21 rows of padding: 10 on top, 11 below
    assert (out[:10] == 114).all() and (out[-11:] == 114).all() and (out[10:53] == 7).all()
    box = np.array([[15.0, 20.0, 90.0, 80.0]])  # original pixels
    in_net = box * lb.ratio + np.array([lb.pad * 2])
    np.testing.assert_allclose(scale_boxes(in_net, lb), box, atol=1e-4)


def test_letterbox_square_mode_and_scale_boxes_clips():
    out, lb = letterbox(np.zeros((40, 20, 3), np.uint8), size=64, stride=32, auto=False)
    assert out.shape == (64, 64, 3) and lb.pad == (16.0, 0.0) and lb.ratio == pytest.approx(1.6)
    clipped = scale_boxes(np.array([[0.0, -5.0, 80.0, 70.0]]), Letterbox(ratio=1.0, pad=(0.0, 0.0), shape=(40, 20)))
    np.testing.assert_allclose(clipped, [[0, 0, 20, 40]])


# ----------------------------------------------------------------------------------------------- decoding
def test_decode_head_matches_yolov5_formula_on_known_logits():
    raw = torch.zeros(1, 2, 2, 3, 6)  # (B, na=2, ny=2, nx=3, 5+nc=6)
    raw[0, 1, 1, 2, :4] = 40.0  # σ = 1: centre offset 1.5 cells, size 4× anchor
    anchors = torch.tensor([[[10.0, 20.0], [30.0, 40.0]]])  # (nl=1, na=2, 2) pixels
    pred = decode_head([raw], anchors, [8])  # (1, 12, 6)
    assert pred.shape == (1, 12, 6)
    # σ(0) = 0.5: centre at (x + 0.5)·stride, size = anchor; row order anchor, y, x
    np.testing.assert_allclose(pred[0, 0].numpy(), [4, 4, 10, 20, 0.5, 0.5], atol=1e-6)
    np.testing.assert_allclose(pred[0, 1 * 3 + 2].numpy(), [20, 12, 10, 20, 0.5, 0.5], atol=1e-6)
    np.testing.assert_allclose(pred[0, 6 + 1 * 3 + 2].numpy(), [(2 + 1.5) * 8, (1 + 1.5) * 8, 120, 160, 0.5, 0.5])


def test_box_iou_known_values():
    a = np.array([[0, 0, 10, 10], [0, 0, 0, 0]], dtype=np.float32)
    b = np.array([[5, 0, 15, 10], [0, 0, 10, 10], [20, 20, 30, 30]], dtype=np.float32)
    np.testing.assert_allclose(box_iou(a, b), [[50 / 150, 1, 0], [0, 0, 0]], atol=1e-6)


def test_nms_suppresses_overlaps_only_within_a_class():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30], [0, 0, 10, 10]], dtype=np.float32)
    scores = np.array([0.9, 0.8, 0.7, 0.85], dtype=np.float32)
    # boxes 0 and 1 overlap with IoU 81/119 ≈ 0.68; box 3 is box 0 again
    assert nms(boxes, scores, 0.5).tolist() == [0, 2]
    assert nms(boxes, scores, 0.7).tolist() == [0, 1, 2]
    assert batched_nms(boxes, scores, np.array([0, 0, 0, 1]), 0.5).tolist() == [0, 3, 2]
    assert nms(boxes, scores, 0.5, max_det=1).tolist() == [0]
    assert batched_nms(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64), 0.5).size == 0


def test_select_scores_are_objectness_times_class_and_filters_apply():
    pred = np.array(
        [  # cx, cy, w, h, obj, person, car
            [50, 50, 20, 40, 0.9, 0.9, 0.1],  # person 0.81
            [52, 50, 20, 40, 0.8, 0.9, 0.1],  # person 0.72, overlaps row 0 → suppressed
            [150, 50, 20, 20, 0.9, 0.2, 0.8],  # car 0.72
            [250, 50, 20, 20, 0.2, 1.0, 0.0],  # objectness under the threshold
            [350, 50, 20, 20, 0.5, 0.4, 0.3],  # person 0.2 under the threshold
        ],
        dtype=np.float32,
    )
    boxes, scores, ids = select(pred, conf_threshold=0.25, iou_threshold=0.45)
    np.testing.assert_allclose(scores, [0.81, 0.72], atol=1e-6)
    assert ids.tolist() == [0, 1]
    np.testing.assert_allclose(boxes[0], [40, 30, 60, 70])
    boxes, scores, ids = select(pred, 0.25, 0.45, classes=[1])
    assert ids.tolist() == [1] and boxes.shape == (1, 4)
    assert select(pred[:0], 0.25, 0.45)[0].shape == (0, 4)


def test_resolve_classes_names_and_ids():
    names = ["person", "bicycle", "car"]
    assert resolve_classes(["person", "2"], names) == [0, 2]
    assert resolve_classes([1], names) == [1]
    assert resolve_classes([], names) is None
    with pytest.raises(ValueError, match="unknown classes.*'dog'"):
        resolve_classes(["dog"], names)


# ----------------------------------------------------------------------------------------------- drawing
def test_draw_labels_tracked_boxes_with_their_id_in_the_track_colour():
    from dig2dig_ros.core.detection import draw
    from dig2dig_ros.core.detection.detector import TRACK_COLOURS, UNTRACKED_COLOUR

    def edge_colour(img: np.ndarray, box: np.ndarray) -> tuple[int, ...]:
        """The palette colour closest in direction to the mean colour of the box's left edge (lines are
        anti-aliased, so edge pixels are the colour scaled down)."""
        x1, y1, _, y2 = box.astype(int)
        mean = img[y1 + 10 : y2 - 10, x1 - 1 : x1 + 2].reshape(-1, 3).mean(axis=0)  # (3,)
        palette = np.array(TRACK_COLOURS, float)  # (P,3)
        cosine = palette @ mean / (np.linalg.norm(palette, axis=1) * np.linalg.norm(mean))
        return TRACK_COLOURS[int(cosine.argmax())]

    frame = np.zeros((120, 200, 3), np.uint8)  # (H,W,3)
    boxes = np.array([[20, 30, 80, 110], [120, 30, 180, 110]], np.float32)
    dets = Detections(boxes, np.array([0.9, 0.8], np.float32), np.array([0, 0]), ["person"])
    plain = draw(frame, dets)
    assert [edge_colour(plain, b) for b in boxes] == [UNTRACKED_COLOUR] * 2
    tracked = Detections(boxes, dets.scores, dets.class_ids, dets.names, track_ids=np.array([3, 14]),
                         confirmed=np.array([True, True]))
    out = draw(frame, tracked)
    assert [edge_colour(out, b) for b in boxes] == [TRACK_COLOURS[3], TRACK_COLOURS[14 % len(TRACK_COLOURS)]]
    assert TRACK_COLOURS[3] != TRACK_COLOURS[14 % len(TRACK_COLOURS)]
    # The labels sit above the boxes: "#3 person 0.90" reaches further right than "person 0.90".
    def label_width(img: np.ndarray) -> int:
        return int(np.flatnonzero(img[5:29, 20:120].any(axis=(0, 2))).max())

    assert label_width(out) > label_width(plain) + 10


# ----------------------------------------------------------------------------------------------- model + format
def test_yolov5n_definition_has_the_published_parameter_count():
    model = YoloV5(YoloV5Config.for_scale("n"))
    assert sum(p.numel() for p in model.parameters()) == 1_872_157  # YOLOv5n v6 summary (unfused)


def test_tiny_model_shapes_and_save_load_round_trip(tmp_path):
    torch.manual_seed(0)
    model = YoloV5(YoloV5Config(**TINY)).eval()
    x = torch.rand(1, 3, 64, 96)  # (B,3,H,W)
    with torch.no_grad():
        levels = model(x)
    assert [tuple(t.shape) for t in levels] == [(1, 3, 8, 12, 7), (1, 3, 4, 6, 7), (1, 3, 2, 3, 7)]
    save_model(model, tmp_path / "m")
    loaded = load_model(tmp_path / "m")
    assert loaded.cfg.names == ["person", "car"]
    with torch.no_grad():
        for a, b in zip(levels, loaded(x), strict=True):
            torch.testing.assert_close(a, b)


def test_load_model_errors_are_clear(tmp_path):
    with pytest.raises(ModelFormatError, match="cannot read YOLOv5 config"):
        load_model(tmp_path / "absent")
    model_dir = save_model(YoloV5(YoloV5Config(**TINY)), tmp_path / "m")
    (model_dir / "model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(ModelFormatError, match="cannot read YOLOv5 weights"):
        load_model(model_dir)
    save_model(YoloV5(YoloV5Config(**{**TINY, "width_multiple": 0.125})), tmp_path / "other")
    (tmp_path / "other" / "model.safetensors").replace(model_dir / "model.safetensors")
    with pytest.raises(ModelFormatError, match="do not fit the config"):
        load_model(model_dir)


def test_detector_runs_tiny_model_and_filters_classes(tmp_path):
    torch.manual_seed(0)
    model = YoloV5(YoloV5Config(**TINY))
    with torch.no_grad():  # every cell: objectness and "car" certain, "person" not
        for head in model.model[-1].m:
            bias = head.bias.view(3, 7)
            bias[:] = -20.0
            bias[:, :4] = 0.0  # boxes of anchor size at the cell centres
            bias[:, 4] = 20.0
            bias[:, 6] = 20.0
    save_model(model, tmp_path / "m")
    img = np.random.default_rng(0).integers(0, 255, (48, 80, 3), dtype=np.uint8)
    cars = Detector(DetectorConfig(model_path=str(tmp_path / "m"), classes=["car"], device="cpu", input_size=64))
    dets = cars(img)
    assert len(dets) > 0 and set(dets.class_names()) == {"car"}
    assert (dets.boxes[:, [0, 2]] <= 80).all() and (dets.boxes[:, [1, 3]] <= 48).all()
    people = Detector(DetectorConfig(model_path=str(tmp_path / "m"), classes=["person"], device="cpu", input_size=64))
    assert len(people(img)) == 0


# ----------------------------------------------------------------------------------------------- converter
def test_converter_refuses_a_file_with_another_hash(tmp_path, capsys):
    fake = tmp_path / "yolov5n.pt"
    fake.write_bytes(b"PK\x03\x04 definitely not the published checkpoint")
    with pytest.raises(conv.ConversionRefused, match="sha256 .* is not the expected"):
        conv.convert(fake, tmp_path / "out")
    assert conv.main(["--pt", str(fake), "--out", str(tmp_path / "out")]) == 1
    assert "refusing" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_restricted_unpickler_refuses_foreign_globals_and_builds_standins():
    evil = b"\x80\x02cos\nsystem\nX\x04\x00\x00\x00trueq\x00\x85R."  # os.system("true")
    with pytest.raises(conv.ConversionRefused, match="refusing to load global 'os.system'"):
        conv.RestrictedUnpickler(evil, archive=None, prefix="").load()
    fake = b"\x80\x02cmodels.common\nConv\nq\x00)\x81q\x01}q\x02X\x01\x00\x00\x00aK\x03sb."  # NEWOBJ + BUILD
    obj = conv.RestrictedUnpickler(fake, archive=None, prefix="").load()
    assert isinstance(obj, conv.StandIn) and obj.state == {"a": 3} and type(obj).qualname == "models.common.Conv"


def test_real_yolov5n_converts_and_finds_an_annotated_person(shared_data, tmp_path):
    pt = shared_data / "weights" / "yolov5n.pt"
    if not pt.is_file():
        pytest.skip(f"{pt} not found")
    assert conv.main(["--pt", str(pt), "--out", str(tmp_path / "y5n")]) == 0
    cfg = DetectorConfig(model_path=str(tmp_path / "y5n"), device="cpu", input_size=640)
    detector = Detector(cfg)
    assert detector.names[0] == "person" and len(detector.names) == 80
    stem = "010001"
    frame = cv2.imread(str(shared_data / "vif" / "llvip" / "vis" / f"{stem}.jpg"))
    dets = detector(frame)
    truth = voc_boxes(shared_data / "vif" / "llvip" / "annotations" / f"{stem}.xml")
    assert len(truth) > 0 and len(dets) > 0
    assert set(dets.class_names()) == {"person"}
    best = box_iou(dets.boxes, truth).max(axis=0)  # (G,) best IoU per annotated person
    assert (best > 0.5).sum() >= 1, best
