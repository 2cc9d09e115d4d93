# SPDX-License-Identifier: Apache-2.0
"""Pre-processing in the graph on the shipped shapes model: agreement with the host pipeline and the host time left.

Run:  python benchmarks/preprocess_in_graph.py [--count 40] [--threads 2] [--runs 20]

Exports deformable-detr-shapes twice (dynamic, plugin form): with host pre-processing (``pixel_values`` in) and with
``--preprocess-in-graph`` (``image`` uint8 in), on fresh held-out scenes (detr-render seed 3):
- the accuracy gate (detr-parity's ParityCheck, COCO annotations of the scenes) on both artifacts;
- the in-graph artifact against the host-input artifact directly: max |dlogit|, detections (score > 0.3) matched at
  IoU >= 0.9 with the same label, mAP of the in-graph artifact with the host artifact's detections (> 0.5) as ground
  truth, and how many images the two resize rules size differently (the documented one-pixel case);
- per image, what the host spends before inference (Detector.preprocess: median of --runs on a 480x640 photo and on
  one scene) and the inference call itself (onnxruntime CPU, where the in-graph artifact also resizes).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from detr_deploy import create_model
from detr_deploy.compare import detection_map, match_detections
from detr_deploy.export import ExportConfig
from detr_deploy.export.verify import export_verified
from detr_deploy.parity import ParityCheck, format_report
from detr_deploy.runtime import Detector, load_image
from detr_deploy.runtime.preprocess_graph import graph_output_size, host_output_size
from detr_deploy.zoo.shapes import render_dataset


def median_ms(fn, runs: int) -> float:
    fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=40, help="held-out scenes (default 40)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=20, help="timed runs of the host-time measurements")
    args = parser.parse_args()
    model = create_model("deformable-detr-shapes")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        annotations = render_dataset(tmp / "scenes", args.count, 3, show_progress=False)
        coco = json.loads(annotations.read_text())
        files = {Path(i["file_name"]).name: i["id"] for i in coco["images"]}
        images = sorted((tmp / "scenes" / "images").iterdir())
        ids = [files[p.name] for p in images]
        paths = {}
        for name, in_graph in (("host", False), ("graph", True)):
            paths[name] = tmp / f"shapes_{name}.onnx"
            done = export_verified(model, paths[name], ExportConfig(preprocess_in_graph=in_graph), log=print)
            if not done.passed:
                print(f"export verification failed: {done.problems}")
                return 1
        from detr_deploy.runtime.backends import BackendOptions

        options = BackendOptions(threads=args.threads)
        with ParityCheck(model, [str(paths["host"]), str(paths["graph"])], options=options) as check:
            report = check.run([str(p) for p in images], coco=coco, image_ids=ids)
        print("\n" + format_report(report))
        graph_raw = report["artifacts"][1]["raw"]
        print(f"in-graph pre-processing vs host on these scenes: {graph_raw['preprocess_vs_host']}")

        with Detector(paths["host"], threshold=0.0, threads=args.threads) as host, \
                Detector(paths["graph"], threshold=0.0, threads=args.threads) as graph:
            pre = host.metadata.preprocess
            worst, matched, total, truth, found, size_differences = 0.0, 0, 0, [], [], 0
            for path in images:
                image = load_image(path)
                size_differences += graph_output_size(*image.shape[:2], pre) != host_output_size(*image.shape[:2], pre)
                hb, gb = host.preprocess([image]), graph.preprocess([image])
                ho, go = host.infer(hb), graph.infer(gb)
                if ho["logits"].shape == go["logits"].shape:
                    worst = max(worst, float(np.abs(ho["logits"] - go["logits"]).max()))
                hd = host.postprocess(ho, hb, 1, 0.0)[0]
                gd = graph.postprocess(go, gb, 1, 0.0)[0]
                keep = hd["scores"] > 0.3
                m = match_detections({k: np.asarray(hd[k])[keep] for k in ("boxes", "scores", "labels")}, gd, 0.9)
                matched, total = matched + m.matched, total + m.reference
                gt = hd["scores"] > 0.5
                truth.append({"boxes": hd["boxes"][gt], "labels": hd["labels"][gt]})
                found.append(gd)
            print(f"\nin-graph vs host-input artifact on {len(images)} held-out scenes: max |dlogit| {worst:.2e}, "
                  f"matched {matched}/{total} detections (score > 0.3, IoU >= 0.9), mAP vs host detections "
                  f"{detection_map(truth, found):.4f}, resize-rule size differences {size_differences}")
            from PIL import Image
            from skimage import data

            photo = np.asarray(Image.fromarray(data.chelsea()).resize((640, 480)))
            scene = load_image(images[0])
            print(f"\nhost time per image (median of {args.runs}; onnxruntime CPU, {args.threads} threads):")
            for label, image in (("480x640 photo", photo), (f"{scene.shape[0]}x{scene.shape[1]} scene", scene)):
                for name, det in (("host pre-processing", host), ("in-graph (host: stack only)", graph)):
                    batch = det.preprocess([image])
                    pre_ms = median_ms(lambda det=det, image=image: det.preprocess([image]), args.runs)
                    infer_ms = median_ms(lambda det=det, batch=batch: det.infer(batch), max(3, args.runs // 4))
                    print(f"  {label:<18} {name:<28} preprocess {pre_ms:8.3f} ms   inference {infer_ms:8.1f} ms")
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
