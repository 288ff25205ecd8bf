"""Speed on this machine, each figure next to a naive baseline from the same run.

    PNEUMO_BACKBONE_WEIGHTS=../shared/weights/vgg16_imagenet_notop.weights.h5 python -m tools.bench [--quick]

Prints a table (median, min, max over repeats), then one JSON line of headline figures, with two yardsticks
from the same run (the naive predict + Grad-CAM, VGG16's bare trunk) and our time's ratio to each: compare
machines by those ratios. Naive baselines: Keras `model.predict` per image and keras-io's Grad-CAM (a second,
full GradientTape forward pass); a full-size float overlay; `model.fit` through VGG16. Training (not with --quick):
train.py's shipped command on 100 images per class (with ../shared's adult_dev and lung_masks), cold then warm,
at both precisions. The int8 trunk is timed against fp32 on the same bundle, interleaved: its JSON ratios
`int8_fp32_cam_ratio` (predict + Grad-CAM + overlay p50) and `int8_fp32_throughput_ratio` (folder images/s).
Through the running app (/predict: upload, JSON and the overlay back): one user's p50 through a browser's requests
(`served_p50_ms`, tools/page_client.py) and through gradio_client (`served_gradio_client_p50_ms`, which adds its
50 ms polling), 8 users at once each way (`load8_p50_ms`, `load8_gradio_client_p50_ms`), `served_over_predict`
(served p50 over the in-process predict + Grad-CAM + overlay p50), and a breakdown of one served request by stage.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from pneumo.config import BACKBONE_ENV, CLASS_NAMES
from pneumo.infer import gradcam
from pneumo.infer.predictor import Predictor, predict_paths
from pneumo.io import read_image
from pneumo.model.build import HeadConfig, build_head_model
from pneumo.model.bundle import CONFIG, HEAD_WEIGHTS, load_int8_ranges
from pneumo.model.lung_decoder import LUNGS_FILE
from pneumo.model.pooling import GAP, zone_pool
from pneumo.preprocess import to_model_input
from pneumo.ui.service import Analysis
from tools.appserver import ROOT
from tools.bench_served import bench_app, draw, served_breakdown
from tools.shared_data import SHARED
from tools.timing import Table, interleaved, machine, timed


def naive_overlay(gray: np.ndarray, heat: np.ndarray) -> np.ndarray:
    """keras-io's overlay: matplotlib jet colours, PIL resize, float blend at full size."""
    import matplotlib
    from PIL import Image

    colours = matplotlib.colormaps["jet"](np.uint8(255 * heat))[..., :3]
    colours = np.asarray(Image.fromarray(np.uint8(colours * 255)).resize(gray.shape[::-1]), np.float64)
    return np.uint8(np.clip(colours * 0.4 + np.repeat(gray[..., None], 3, -1).astype(np.float64), 0, 255))


def bench_image(predictor, path: Path, repeats: int, table: Table) -> dict:
    import tensorflow as tf

    model = predictor.model
    grad_model = tf.keras.Model(model.input, [model.get_layer("block5_conv3").output, model.output])

    def ours(with_cam: bool):
        analyze_and_draw(predictor, path, with_cam)

    def naive(with_cam: bool):
        image = read_image(path)
        x = to_model_input(image)[None]
        prob = model.predict(x, verbose=0)[0, 0]
        if with_cam:
            with tf.GradientTape() as tape:
                conv, out = grad_model(x)
                target = out[:, 0] if prob >= predictor.threshold else -out[:, 0]
            heat = gradcam.heatmap(conv.numpy()[0], tape.gradient(target, conv).numpy()[0])
            naive_overlay(image.gray, heat)

    cam = [t * 1000 for t in timed(lambda: ours(True), repeats)]
    naive_cam = [t * 1000 for t in timed(lambda: naive(True), max(3, repeats // 4))]
    table.add(f"predict + Grad-CAM + overlay, {read_image(path).size[0]}px JPEG, p50", cam, naive_cam, "ms")
    table.add("  same, p95", float(np.percentile(cam, 95)), None, "ms")
    table.add("predict only (no Grad-CAM), p50", [t * 1000 for t in timed(lambda: ours(False), repeats)],
              [t * 1000 for t in timed(lambda: naive(False), max(3, repeats // 4))], "ms")
    trunk = bench_trunk(predictor, to_model_input(read_image(path))[None], repeats, table)
    p50, naive_p50 = float(np.median(cam)), float(np.median(naive_cam))
    return {"predict_cam_p50_ms": round(p50, 1), "predict_cam_p95_ms": round(float(np.percentile(cam, 95)), 1),
            "naive_cam_p50_ms": round(naive_p50, 1), "trunk_ms": trunk and round(trunk, 1),
            "speedup_vs_naive": round(naive_p50 / p50, 2), "request_over_trunk": trunk and round(p50 / trunk, 2)}


def bench_trunk(predictor, x: np.ndarray, repeats: int, table: Table) -> float | None:
    """p50 of VGG16's bare trunk (image -> block5_conv3) in ONNX Runtime on one preprocessed image, at the bundle's
    precision: the machine's yardstick for what serves, no decoder, no head."""
    try:
        from pneumo.model.onnx_graph import OnnxTrunk, trunk_to_onnx

        trunk = OnnxTrunk(trunk_to_onnx(predictor.model, int8=load_int8_ranges(predictor.bundle)))
    except ImportError:
        print("(trunk row skipped: pip install onnxruntime onnx to measure it)")
        return None
    times = [t * 1000 for t in timed(lambda: trunk(x), repeats)]
    table.add(f"VGG16 trunk alone ({predictor.bundle.precision}, ONNX Runtime, one image), p50", times, None, "ms")
    return float(np.median(times))


def analyze_and_draw(predictor, path: Path, with_cam: bool) -> None:
    """What the app does per upload: read, predict, Grad-CAM, the overlay at display size, the lung outline (with a
    lung head) and the JPEG it sends."""
    image = read_image(path)
    prediction = predictor.analyze(image, with_cam)
    if with_cam:
        draw(Analysis(path.name, image, prediction, 0.0))  # the display-size film is made here, as in the app


def bench_lung_head(predictor, path: Path, repeats: int, table: Table) -> float | None:
    """The bundle against the design's plain form (global average pooling, no lung head), interleaved: what the
    lung fields cost per upload. The plain form is this bundle with an untrained GAP head and no lungs.npz (the
    time does not depend on the head's weights)."""
    if predictor.decoder is None:
        print("(lung head row skipped: the bundle has no lungs.npz)")
        return None
    with tempfile.TemporaryDirectory() as tmp:
        bare = Path(tmp) / "bundle"
        shutil.copytree(predictor.bundle.path, bare, ignore=shutil.ignore_patterns(LUNGS_FILE))
        config = json.loads((bare / CONFIG).read_text())
        config["recipe"]["head"] = HeadConfig(pooling=GAP).to_dict()
        (bare / CONFIG).write_text(json.dumps(config))
        build_head_model(HeadConfig(pooling=GAP)).save_weights(bare / HEAD_WEIGHTS)
        without = Predictor.load(bare, backend=predictor.backend)
    both = [[t * 1000 for t in times] for times in interleaved(
        [lambda: analyze_and_draw(predictor, path, True), lambda: analyze_and_draw(without, path, True)], repeats)]
    table.add("predict + Grad-CAM + overlay: this bundle (lung head, outline) vs GAP, no lung head", both[0],
              both[1], "ms")
    return float(np.median(both[0]) / np.median(both[1]))


def other_precision(predictor, tmp: Path) -> Predictor:
    """The same bundle at the other precision, for timing only: speed depends on neither the heads' weights nor the
    int8 ranges. An int8 bundle's fp32 twin says "fp32"; an fp32 bundle's int8 twin gets ranges from examples/."""
    from pneumo.model.int8 import INT8_FILE
    from pneumo.model.onnx_graph import activation_ranges

    twin = tmp / "twin"
    shutil.copytree(predictor.bundle.path, twin, ignore=shutil.ignore_patterns(INT8_FILE))
    config = json.loads((twin / CONFIG).read_text())
    config["precision"] = "fp32" if predictor.bundle.precision == "int8" else "int8"
    if config["precision"] == "int8":
        images = np.stack([to_model_input(read_image(p)) for p in sorted((ROOT / "examples").glob("*.jpeg"))])
        activation_ranges(predictor.model, images).save(twin / INT8_FILE)
    (twin / CONFIG).write_text(json.dumps(config))
    return Predictor.load(twin, backend=predictor.backend)


def bench_precisions(predictor, image: Path, paths: list[Path], repeats: int, table: Table) -> dict:
    """int8 against fp32 trunk, interleaved in one run: predict + Grad-CAM + overlay per upload, and a folder."""
    if predictor.backend != "onnx":
        print("(int8 rows skipped: the int8 trunk runs in ONNX Runtime only)")
        return {"int8_fp32_cam_ratio": None, "int8_fp32_throughput_ratio": None}
    with tempfile.TemporaryDirectory() as tmp:
        twin = other_precision(predictor, Path(tmp))
    int8, fp32 = (predictor, twin) if predictor.bundle.precision == "int8" else (twin, predictor)
    cam = dict(zip(("int8", "fp32"), ([t * 1000 for t in times] for times in interleaved(
        [lambda: analyze_and_draw(int8, image, True), lambda: analyze_and_draw(fp32, image, True)], repeats))))
    rates, paths = {"int8": [], "fp32": []}, paths[:64]  # 64 images: four batches of 16, twice each
    for _ in range(2):  # two rounds, interleaved
        for name, model in (("int8", int8), ("fp32", fp32)):
            start = time.perf_counter()
            n = sum(1 for *_, error in predict_paths(model, paths, desc=f"{name} folder") if error is None)
            rates[name].append(n / (time.perf_counter() - start))
    table.add("int8 trunk vs fp32: predict + Grad-CAM + overlay, p50", cam["int8"], cam["fp32"], "ms")
    table.add(f"int8 trunk vs fp32: folder of {len(paths)}, batches of 16", rates["int8"], rates["fp32"], "img/s",
              higher_is_better=True)
    return {"int8_fp32_cam_ratio": round(float(np.median(cam["int8"]) / np.median(cam["fp32"])), 3),
            "int8_fp32_throughput_ratio": round(float(np.median(rates["int8"]) / np.median(rates["fp32"])), 3)}


def bench_throughput(predictor, paths: list[Path], table: Table) -> float:
    start = time.perf_counter()
    n = sum(1 for _, _, error in predict_paths(predictor, paths, desc="throughput") if error is None)
    ours = n / (time.perf_counter() - start)
    subset = paths[: max(8, len(paths) // 4)]
    start = time.perf_counter()
    for path in subset:
        predictor.model.predict(to_model_input(read_image(path))[None], verbose=0)
    naive = len(subset) / (time.perf_counter() - start)
    table.add(f"predict over a folder ({n} images), batches of 16", ours, naive, "img/s", higher_is_better=True)
    return ours


def bench_features(predictor, table: Table) -> None:
    from pneumo.train.features import FeatureExtractor

    batch = np.random.default_rng(0).uniform(-120, 130, (32, 224, 224, 3)).astype(np.float32)
    ours = FeatureExtractor(predictor.model, predictor.backend)
    keras_extractor = FeatureExtractor(predictor.model, "tf")
    per_s = [32 / t for t in timed(lambda: ours(batch), 2)]
    table.add(f"backbone features, batch 32 ({predictor.backend})", per_s,
              [32 / t for t in timed(lambda: keras_extractor(batch), 2)], "img/s", higher_is_better=True)


def subset_tree(source: Path, per_class: int, dest: Path) -> Path:
    """A Kaggle-layout folder of symlinks: the first `per_class` images of each class of source/train."""
    for name in CLASS_NAMES:
        folder = dest / "train" / name
        folder.mkdir(parents=True)
        for path in sorted((source / "train" / name).iterdir())[:per_class]:
            (folder / path.name).symlink_to(path.resolve())
    return dest


def bench_training(data_dir: Path, per_class: int, table: Table, precision: str) -> tuple[float, float]:
    """train.py's shipped command (adult films and lung masks from ../shared) on (a subset of) data_dir at
    `precision`: cold with an empty feature cache, then warm."""
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data = subset_tree(data_dir, per_class, tmp / "data") if per_class else data_dir
        n = sum(1 for _ in (Path(data) / "train").rglob("*.jp*g"))
        command = [sys.executable, "train.py", "--data-dir", str(data), "--adult-dir", str(SHARED / "adult_dev"),
                   "--lung-masks", str(SHARED / "lung_masks"), "--output", str(tmp / "bundle"),
                   "--cache-dir", str(tmp / "cache"), "--precision", precision]

        def run() -> float:
            start = time.perf_counter()
            done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True,
                                  env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
            if done.returncode:
                raise RuntimeError(f"train.py exited with code {done.returncode}: {done.stderr[-2000:]}")
            return time.perf_counter() - start

        cold_s, warm_s = run(), run()
    table.add(f"train.py --precision {precision} cold (empty feature cache), {n} images", cold_s, None, "s")
    table.add(f"train.py --precision {precision} warm (features and lung head cached), {n} images", warm_s, None,
              "s")
    return cold_s, warm_s


def bench_naive_fit(predictor, table: Table) -> None:
    """What `model.fit` through the frozen VGG16 costs per image and epoch (the usual tutorial recipe)."""
    import keras

    model = keras.models.clone_model(predictor.model)
    model.compile(optimizer="adam", loss="binary_crossentropy")
    x = np.random.default_rng(0).uniform(-120, 130, (64, 224, 224, 3)).astype(np.float32)
    y = np.random.default_rng(1).integers(0, 2, (64, 1)).astype(np.float32)
    seconds = timed(lambda: model.fit(x, y, batch_size=32, epochs=1, verbose=0), 1)[0]
    table.add("naive: model.fit through VGG16, per image per epoch", None, seconds / 64 * 1000, "ms")


def bench_rejected(predictor, paths: list[Path], table: Table) -> None:
    """Speed-ups we tried and did not keep, each with how much it changes the probability."""
    from PIL import Image

    from pneumo.model.backends import NumpyHead, pool_activations, reads_lung_zones
    from pneumo.model.onnx_graph import trunk_to_onnx

    paths = paths[:48]
    exact = predictor.predict_inputs(np.stack([to_model_input(read_image(p)) for p in paths]))[0]

    def drafted(path):
        image = Image.open(path)
        image.draft("L", (448, 448))  # JPEG DCT-domain downscale to >= 2x the model input
        return to_model_input(np.asarray(image.convert("L")))

    full = [t * 1000 for t in timed(lambda: np.asarray(Image.open(paths[0]).convert("L")), 10)]
    draft = [t * 1000 for t in timed(lambda: drafted(paths[0]), 10)]
    shift = np.abs(predictor.predict_inputs(np.stack([drafted(p) for p in paths]))[0] - exact).max()
    table.add(f"tried: Pillow draft decode vs full, {len(paths)} originals (max |dp| {shift:.3f})", draft, full, "ms")
    try:
        import openvino as ov
    except ImportError:
        print("(OpenVINO bf16 row skipped: pip install openvino to measure it)")
        return
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "trunk.onnx").write_bytes(trunk_to_onnx(predictor.model, decoder=predictor.decoder))
        core = ov.Core()
        compiled = core.compile_model(core.read_model(str(Path(tmp) / "trunk.onnx")), "CPU",
                                      {"INFERENCE_PRECISION_HINT": "bf16", "PERFORMANCE_HINT": "LATENCY"})
    x = np.stack([to_model_input(read_image(p)) for p in paths])
    outputs = [compiled(x[i:i + 1]) for i in range(len(x))]
    activations = np.concatenate([out[0] for out in outputs])
    head_input = pool_activations(activations)
    if reads_lung_zones(predictor.model):
        head_input = zone_pool(activations, np.concatenate([out[1] for out in outputs])[..., 0])[0]
    logits, _ = NumpyHead(predictor.model)(head_input)
    shift = np.abs(1 / (1 + np.exp(-logits)) - exact).max()
    one = x[:1]
    table.add(f"tried: OpenVINO bf16/AMX vs ours (max |dp| {shift:.3f})",
              [t * 1000 for t in timed(lambda: compiled(one), 10)],
              [t * 1000 for t in timed(lambda: predictor.predict_inputs(one), 10)], "ms")


def pick_inputs() -> tuple[Path, list[Path]]:
    """A >= 1500 px JPEG and a folder of X-rays: from ../shared when present, else examples/."""
    examples = sorted((ROOT / "examples").glob("*.jpeg"))
    big = next((p for p in examples if p.name == "NORMAL2-IM-1427-0001.jpeg"), None)
    if big is None:
        raise ValueError("examples/NORMAL2-IM-1427-0001.jpeg (1776x1416) is missing; it is the benchmark image.")
    folder = SHARED / "shift_dev"
    paths = sorted(folder.rglob("*.jpeg")) if folder.is_dir() else examples * 16
    return big, paths


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="skip the training runs")
    parser.add_argument("--full-train", action="store_true",
                        help="time train.py on all of ../shared train/ instead of 100 images per class")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--model", default=None, help="bundle folder or hf://USER/REPO (default: env PNEUMO_MODEL, "
                        "else weights/)")
    parser.add_argument("--backbone-weights", default=None, help="default: env PNEUMO_BACKBONE_WEIGHTS, else imagenet")
    args = parser.parse_args(argv)
    if not os.environ.get(BACKBONE_ENV) and not args.backbone_weights:
        print(f"note: {BACKBONE_ENV} is not set; Keras will download the ImageNet weights", file=sys.stderr)
    print(machine())
    table = Table()
    table.header()
    start = time.perf_counter()
    predictor = Predictor.load(args.model, args.backbone_weights)
    load_s = time.perf_counter() - start
    start = time.perf_counter()
    Predictor.load(args.model, args.backbone_weights, backend="tf")
    table.add(f"model load (bundle + backbone, {predictor.backend} vs tf)", load_s, time.perf_counter() - start, "s")
    image, folder = pick_inputs()
    headline = bench_image(predictor, image, args.repeats, table)
    ratio = bench_lung_head(predictor, image, args.repeats, table)
    headline["lung_head_time_ratio"] = ratio and round(ratio, 3)
    headline["predict_images_per_s"] = round(bench_throughput(predictor, folder, table), 1)
    headline.update(bench_precisions(predictor, image, folder, args.repeats, table))
    bench_features(predictor, table)
    originals = sorted((SHARED / "chest_xray" / "val").rglob("*.jpeg"))  # draft only matters at full resolution
    bench_rejected(predictor, originals or sorted((ROOT / "examples").glob("*.jpeg")), table)
    bench_naive_fit(predictor, table)
    served = bench_app(args.model, image, 15, [image, *folder[:7]], table)
    served_breakdown(predictor, image, args.repeats, served["served_p50_ms"], headline["trunk_ms"], table)
    headline.update(served, served_over_predict=round(served["served_p50_ms"] / headline["predict_cam_p50_ms"], 2),
                    train_cold_s=None, train_warm_s=None)
    if args.quick:  # the shipped recipe trains a lung head and reads the adult films: minutes even on 200 images
        print("(--quick: training skipped, train_cold_s and train_warm_s are null)")
    else:
        data_dir = SHARED / "chest_xray"
        missing = [str(d) for d in (data_dir, SHARED / "adult_dev", SHARED / "lung_masks") if not d.is_dir()]
        if missing:
            raise ValueError(f"the training benchmark needs {', '.join(missing)} (chest_xray: the Kaggle layout)")
        per_class = 0 if args.full_train else 100
        timings = {precision: bench_training(data_dir, per_class, table, precision) for precision in ("int8", "fp32")}
        cold, warm = timings[predictor.bundle.precision]
        headline.update(train_cold_s=round(cold, 1), train_warm_s=round(warm, 1),
                        int8_fp32_train_cold_ratio=round(timings["int8"][0] / timings["fp32"][0], 3))
    print(json.dumps(headline))
    return 0


if __name__ == "__main__":
    sys.exit(main())
