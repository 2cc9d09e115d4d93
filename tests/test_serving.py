# SPDX-License-Identifier: Apache-2.0
"""Serving on Triton: repositories written by detr-triton, loaded by a real tritonserver on free loopback ports
(started and stopped here), detections against the local Detector, concurrency with dynamic batching, bad payloads,
a server that goes away, and the CLIs (detr-triton, detr-infer --triton, detr-serve).

The server: $TRITONSERVER (bash .ci/triton_server.sh sets it up, with $TRITON_PYTHONPATH for the Python-backend
models), else the repository's .venv-triton. Without one, the server tests skip naming that command; the config
tests run regardless. Every request loop is bounded, every client call has a timeout.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import PHOTOS, tiny_model

REPO = Path(__file__).resolve().parents[1]
SETUP = 'eval "$(bash .ci/triton_server.sh)"'
SHAPES_SIZE = (256, 416)
THRESHOLD = 0.05  # low enough that the shapes model finds several boxes on the photographs
SCORE_TOL, BOX_TOL = 1e-5, 0.01
SEGMENT_SETTINGS = {"mask_threshold": 0.05, "overlap_mask_area_threshold": 0.1}  # as the repository's, below

tritonclient = pytest.importorskip("tritonclient.http", reason="pip install 'detr-deploy[serving]'")


def _server_env() -> tuple[str | None, str | None]:
    """(tritonserver binary, PYTHONPATH for its Python models) from the environment or .venv-triton."""
    binary = os.environ.get("TRITONSERVER")
    pythonpath = os.environ.get("TRITON_PYTHONPATH")
    sites = sorted((REPO / ".venv-triton" / "lib").glob("python3*/site-packages"))
    if sites:
        wheel = sites[0] / "pytriton" / "tritonserver" / "bin" / "tritonserver"
        binary = binary or (str(wheel) if wheel.is_file() else None)
        pythonpath = pythonpath or str(sites[0])
    if binary and not Path(binary).is_file():
        binary = None
    return binary, pythonpath


BINARY, PYTHONPATH = _server_env()
needs_server = pytest.mark.skipif(BINARY is None or PYTHONPATH is None,
                                  reason=f"no tritonserver (set TRITONSERVER and TRITON_PYTHONPATH: run {SETUP})")


def parse_config(text: str):
    """A config.pbtxt through tritonclient's model-config protobuf (syntax, field names and types)."""
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    return text_format.Parse(text, model_config_pb2.ModelConfig())


# --- artifacts ------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def artifacts(tmp_path_factory, shapes_model):
    """{"shapes": the shipped shapes model, static 256x416 plugin form; "detr": a tiny random detr-r50, static;
    "panoptic": a tiny random detr-r50-panoptic, static}."""
    from detr_deploy.export import ExportConfig, export_onnx

    folder = tmp_path_factory.mktemp("serving_artifacts")
    started = time.perf_counter()
    shapes = folder / "shapes.onnx"
    export_onnx(shapes_model, shapes, ExportConfig(msda="plugin", dynamic=False, input_size=SHAPES_SIZE),
                log=lambda m: None)
    detr = folder / "detr.onnx"
    export_onnx(tiny_model("detr-r50"), detr, ExportConfig(dynamic=False, input_size=(160, 192)), log=lambda m: None)
    panoptic = folder / "panoptic.onnx"
    export_onnx(tiny_model("detr-r50-panoptic"), panoptic, ExportConfig(dynamic=False, input_size=(160, 192)),
                log=lambda m: None)
    print(f"\nexports: {time.perf_counter() - started:.1f} s")
    return {"shapes": shapes, "detr": detr, "panoptic": panoptic}


def fake_onnx(path: Path, metadata) -> Path:
    """An ONNX file carrying ``metadata`` (an identity graph: the repository writer reads only the metadata)."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Identity", ["pixel_values"], ["logits"])], "g",
                              [helper.make_tensor_value_info("pixel_values", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1])])
    model = helper.make_model(graph)
    entry = model.metadata_props.add()
    entry.key, entry.value = "detr_deploy", metadata.to_json()
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="module")
def shapes_metadata(artifacts):
    from detr_deploy.serving.repository import read_metadata

    return read_metadata(artifacts["shapes"])[1]


# --- repository writing, no server ----------------------------------------------------------------------------------
def test_repository_configs_parse_for_every_backend(tmp_path, artifacts, shapes_metadata):
    """Python, onnxruntime_onnx and tensorrt_plan repositories: every config.pbtxt parses with tritonclient's
    protobuf and says what the design says (batching, instance kinds, accelerator, plan file names)."""
    import copy

    from detr_deploy.serving.repository import RepositoryConfig, write_repository

    python = write_repository(artifacts["shapes"], tmp_path / "py", RepositoryConfig(name="s", max_batch_size=8))
    configs = {p.parent.name: parse_config(p.read_text()) for p in (tmp_path / "py").glob("*/config.pbtxt")}
    assert sorted(configs) == ["s", "s_model", "s_postprocess", "s_preprocess"]
    assert python.backend == "python" and configs["s_model"].backend == "python"
    assert configs["s"].platform == "ensemble" and [s.model_name for s in configs["s"].ensemble_scheduling.step] == \
        ["s_preprocess", "s_model", "s_postprocess"]
    assert configs["s_model"].max_batch_size == 8 and list(configs["s_model"].dynamic_batching.preferred_batch_size)
    assert list(configs["s_model"].input[0].dims) == [3, *SHAPES_SIZE]
    assert json.loads(configs["s"].parameters["id2label"].string_value)["0"] == "red circle"
    assert (tmp_path / "py/s_model/1/model.onnx").is_file() and (tmp_path / "py/s_model/1/model.py").is_file()
    assert json.loads((tmp_path / "py/s_preprocess/1/artifact.json").read_text())["variant"] == \
        "deformable-detr-shapes"

    write_repository(artifacts["shapes"], tmp_path / "ort", RepositoryConfig(name="s", model_backend="onnxruntime",
                                                                           plugin_libraries=["/opt/libmsda.so"]))
    ort = parse_config((tmp_path / "ort/s_model/config.pbtxt").read_text())
    assert ort.platform == "onnxruntime_onnx" and ort.max_batch_size == 0  # the export's batch is fixed at 1
    assert list(ort.input[0].dims) == [1, 3, *SHAPES_SIZE] and ort.instance_group[0].kind == 1  # KIND_GPU
    accelerator = ort.optimization.execution_accelerators.gpu_execution_accelerator[0]
    assert accelerator.name == "tensorrt" and accelerator.parameters["trt_extra_plugin_lib_paths"] == "/opt/libmsda.so"

    engine = tmp_path / "m.engine"  # an engine is opaque to the writer: its sidecar is what it reads
    engine.write_bytes(b"\0engine")
    data = json.loads(shapes_metadata.to_json())
    data["tensorrt"] = {"version": "10.13.0", "gpu_name": "NVIDIA H200", "compute_capability": "9.0",
                        "plugin_libraries": ["/opt/libmsda.so"], "profile": {}}
    (tmp_path / "m.engine.json").write_text(json.dumps(data))
    write_repository(engine, tmp_path / "trt", RepositoryConfig(name="s"))
    text = (tmp_path / "trt/s_model/config.pbtxt").read_text()
    plan = parse_config(text)
    assert plan.platform == "tensorrt_plan" and plan.cc_model_filenames["9.0"] == "model.plan"
    assert "--backend-config=tensorrt,plugins=\"/opt/libmsda.so\"" in text
    assert (tmp_path / "trt/s_model/1/model.plan").read_bytes() == b"\0engine"

    dynamic = copy.deepcopy(shapes_metadata)
    dynamic.preprocess.resize, dynamic.preprocess.input_size = "shortest_edge", None
    for tensor in dynamic.inputs.values():
        tensor["shape"] = ["batch", *tensor["shape"][1:]]
    dyn = fake_onnx(tmp_path / "dynamic.onnx", dynamic)
    from detr_deploy.cli.args import run
    from detr_deploy.cli.triton import main

    assert run(main, [str(dyn), "-o", str(tmp_path / "dyn")]) == 2  # batching would pad: refused, with the fix
    assert not (tmp_path / "dyn" / "detr").exists()
    assert run(main, [str(dyn), "-o", str(tmp_path / "dyn"), "--max-batch-size", "1"]) == 0
    assert parse_config((tmp_path / "dyn/detr_model/config.pbtxt").read_text()).input[0].dims[1:] == [-1, -1]
    assert run(main, [str(artifacts["detr"]), "-o", str(tmp_path / "det"), "--task", "panoptic"]) == 2


def test_segmentation_repository_configs(tmp_path, artifacts):
    """A segmentation artifact: the ensemble outputs SEGMENTATION and SEGMENTS (panoptic, instance) or the
    detection outputs (--task detection); the model step gives pred_masks, the preprocessing the resized size."""
    from detr_deploy.cli.args import run
    from detr_deploy.cli.triton import main

    for task, outputs in (("panoptic", ["SEGMENTATION", "SEGMENTS"]), ("instance", ["SEGMENTATION", "SEGMENTS"]),
                          ("detection", ["BOXES", "SCORES", "LABELS", "NAMES", "NUM_DETECTIONS"])):
        repo = tmp_path / task
        assert run(main, [str(artifacts["panoptic"]), "-o", str(repo), "--name", "p", "--task", task]) == 0
        configs = {q.parent.name: parse_config(q.read_text()) for q in repo.glob("*/config.pbtxt")}
        assert [o.name for o in configs["p"].output] == outputs
        assert configs["p"].parameters["task"].string_value == task
        assert [o.name for o in configs["p_model"].output] == ["logits", "pred_boxes", "pred_masks"]
        assert list(configs["p_model"].output[2].dims)[1:] == [40, 48]  # H/4, W/4 of the static 160x192
        steps = {s.model_name: s for s in configs["p"].ensemble_scheduling.step}
        resized = "resized_size" in dict(steps["p_postprocess"].input_map)
        assert resized == (task != "detection")
        assert ("resized_size" in [o.name for o in configs["p_preprocess"].output]) == resized


# --- a real server ----------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def repository(tmp_path_factory, artifacts):
    """One repository with both ensembles, "shapes" and "detr", written by the detr-triton command."""
    from detr_deploy.cli.args import run
    from detr_deploy.cli.triton import main

    repo = tmp_path_factory.mktemp("model_repository")
    assert run(main, [str(artifacts["shapes"]), "-o", str(repo), "--name", "shapes", "--max-batch-size", "8"]) == 0
    assert run(main, [str(artifacts["detr"]), "-o", str(repo), "--name", "detr", "--max-batch-size", "4"]) == 0
    for task in ("panoptic", "instance"):  # a tiny random model's masks are weak: low mask thresholds
        assert run(main, [str(artifacts["panoptic"]), "-o", str(repo), "--name", task, "--task", task,
                          "--max-batch-size", "4", "--mask-threshold", "0.05", "--overlap-threshold", "0.1"]) == 0
    # the onnxruntime_onnx repository (max_batch_size 0, a fixed batch filled by the preprocessing) cannot load on
    # this Python-only server: its NAME_model gets a Python-backend stand-in with the same batch and dims
    from detr_deploy.serving.repository import RepositoryConfig, model_config, model_py, plan_repository

    config = RepositoryConfig(name="detrfixed", model_backend="onnxruntime")
    assert run(main, [str(artifacts["detr"]), "-o", str(repo), "--name", "detrfixed", "--model-backend",
                      "onnxruntime"]) == 0
    plan = plan_repository(artifacts["detr"], config)
    plan.backend = "python"
    native = parse_config((repo / "detrfixed_model/config.pbtxt").read_text())
    stand_in = model_config(plan, config)
    assert parse_config(stand_in).input == native.input and parse_config(stand_in).output == native.output
    (repo / "detrfixed_model/config.pbtxt").write_text(stand_in)
    (repo / "detrfixed_model/1/model.py").write_text(model_py("OnnxRuntimeModel"))
    return repo


class _Server:
    """The module's server, (re)started on demand: the last test stops it on purpose."""

    def __init__(self, repo: Path):
        self.repo, self.server = repo, None

    def get(self):
        from detr_deploy.serving.server import TritonServer

        if self.server is None or self.server.process.poll() is not None:
            started = time.perf_counter()
            self.server = TritonServer(self.repo, 0, 0, 0, binary=BINARY, pythonpath=[PYTHONPATH, str(REPO)])
            self.server.start().wait_ready(timeout=150)
            print(f"\ntritonserver ready in {time.perf_counter() - started:.1f} s at {self.server.http_url} (HTTP), "
                  f"{self.server.grpc_url} (gRPC)")
        return self.server


@pytest.fixture(scope="module")
def server(repository):
    holder = _Server(repository)
    yield holder
    if holder.server is not None:
        holder.server.stop()


@pytest.fixture(scope="module")
def local(artifacts):
    from detr_deploy.runtime import Detector

    detectors = {name: Detector(path, threshold=THRESHOLD) for name, path in artifacts.items() if name != "panoptic"}
    for task in ("panoptic", "instance"):
        detectors[task] = Detector(artifacts["panoptic"], threshold=0.0, task=task, **SEGMENT_SETTINGS)
    yield detectors
    for detector in detectors.values():
        detector.close()


@needs_server
def test_server_ready_and_models_loaded(server, repository):
    live = server.get()
    client = tritonclient.InferenceServerClient(live.http_url, connection_timeout=10, network_timeout=10)
    models = {m["name"]: m.get("state") for m in client.get_model_repository_index()}
    print(f"models: {models}")
    expected = [f"{n}{s}" for n in ("shapes", "detr", "detrfixed", "panoptic", "instance")
                for s in ("", "_preprocess", "_model", "_postprocess")]
    assert all(models.get(name) == "READY" for name in expected), models
    assert client.is_server_ready()
    for path in repository.glob("*/config.pbtxt"):  # what the server loaded also parses offline
        parse_config(path.read_text())


def _compare(local_results, remote_results) -> tuple[float, float, int]:
    """Max |score| and |box| differences and detections compared; asserts same count, labels and names."""
    score_diff = box_diff = 0.0
    total = 0
    for mine, theirs in zip(local_results, remote_results, strict=True):
        assert "error" not in mine and "error" not in theirs, (mine, theirs)
        assert len(mine["scores"]) == len(theirs["scores"])
        assert np.array_equal(mine["labels"], theirs["labels"]) and mine["names"] == theirs["names"]
        if len(mine["scores"]):
            score_diff = max(score_diff, float(np.abs(mine["scores"] - theirs["scores"]).max()))
            box_diff = max(box_diff, float(np.abs(mine["boxes"] - theirs["boxes"]).max()))
        total += len(mine["scores"])
    return score_diff, box_diff, total


@needs_server
@pytest.mark.parametrize("model", ["shapes", "detr", "detrfixed"])
def test_detections_equal_the_local_detector(server, local, photo_folder, model):
    """Real photographs through the server, single and batched, HTTP and gRPC, against the local Detector
    ("detrfixed": the max_batch_size 0 ensemble of a native backend, one image per request)."""
    from detr_deploy.serving import TritonDetector

    live = server.get()
    paths = [str(photo_folder / f"{name}.jpg") for name in PHOTOS]
    expected = local["detr" if model == "detrfixed" else model](paths)
    for protocol, url in (("http", live.http_url), ("grpc", live.grpc_url)):
        for batch in (1, 4):
            with TritonDetector(url, model, protocol=protocol, threshold=THRESHOLD, batch_size=batch,
                                timeout=60) as client:
                got = client(paths)
            scores, boxes, total = _compare(expected, got)
            print(f"{model} {protocol} batch {client.batch_size}: {total} detections on {len(paths)} photos, max "
                  f"|score| diff {scores:.2e}, max |box| diff {boxes:.2e} px")
            assert total > 0 and scores <= SCORE_TOL and boxes <= BOX_TOL


def _compare_segments(local_results, remote_results) -> tuple[int, int, float]:
    """Asserts identical maps, segment ids, labels, names and fused flags; returns (pixels, segments, max |score|
    difference)."""
    pixels = segments = 0
    score_diff = 0.0
    for mine, theirs in zip(local_results, remote_results, strict=True):
        assert "error" not in mine and "error" not in theirs, (mine, theirs)
        assert theirs["segmentation"].dtype == np.int32
        assert np.array_equal(mine["segmentation"], theirs["segmentation"])
        assert mine["names"] == theirs["names"]
        assert len(mine["segments_info"]) == len(theirs["segments_info"])
        for a, b in zip(mine["segments_info"], theirs["segments_info"]):
            assert {k: v for k, v in a.items() if k != "score"} == {k: v for k, v in b.items() if k != "score"}
            score_diff = max(score_diff, abs(float(a["score"]) - float(b["score"])))
        pixels += mine["segmentation"].size
        segments += len(mine["segments_info"])
    return pixels, segments, score_diff


@needs_server
@pytest.mark.parametrize("task", ["panoptic", "instance"])
def test_segments_equal_the_local_detector(server, local, photo_folder, task):
    """A segmentation ensemble: the maps at the original size and the segment lists equal the local Detector's,
    over HTTP and gRPC, one image and four (of different sizes) per request."""
    from detr_deploy.serving import TritonDetector

    live = server.get()
    paths = [str(photo_folder / f"{name}.jpg") for name in PHOTOS]
    expected = local[task](paths)
    for protocol, url in (("http", live.http_url), ("grpc", live.grpc_url)):
        for batch in (1, 4):
            with TritonDetector(url, task, protocol=protocol, threshold=0.0, batch_size=batch, timeout=60) as client:
                assert client.task == task
                got = client(paths)
            pixels, segments, scores = _compare_segments(expected, got)
            print(f"{task} {protocol} batch {client.batch_size}: {segments} segments, {pixels} pixels identical on "
                  f"{len(paths)} photos, max |score| diff {scores:.1e}")
            assert segments > 0 and scores <= 1e-6


@needs_server
def test_concurrent_clients_with_dynamic_batching(server, local, photo_folder):
    """8 clients x 25 requests at once: every request answered, none failed; the batches Triton formed, read from
    its statistics, include some larger than 1; throughput against one local Detector. The tiny DETR keeps this
    within the time of a test on two cores (the shapes model's numbers: benchmarks/serving.py)."""
    from detr_deploy.serving import TritonDetector

    live = server.get()
    clients, requests = 8, 25
    data = [(photo_folder / f"{name}.jpg").read_bytes() for name in PHOTOS]
    with TritonDetector(live.http_url, "detr", timeout=30) as probe:
        before = probe.batch_sizes()
    answered, failures = [0] * clients, []

    def worker(k: int) -> None:
        try:
            with TritonDetector(live.http_url, "detr", threshold=THRESHOLD, timeout=60) as client:
                for i in range(requests):
                    result = client([data[(k + i) % len(data)]])[0]
                    if "error" in result:
                        failures.append(result["error"])
                    else:
                        answered[k] += 1
        except Exception as exc:  # a failed client counts, it never hangs the test
            failures.append(f"{type(exc).__name__}: {exc}")

    started = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(k,), daemon=True) for k in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=150)
    served = time.perf_counter() - started
    assert not any(t.is_alive() for t in threads), "a client did not finish within 150 s"
    with TritonDetector(live.http_url, "detr", timeout=30) as probe:
        after = probe.batch_sizes()
    formed = {size: after.get(size, 0) - before.get(size, 0) for size in after if after.get(size, 0) - before.get(
        size, 0)}
    detector = local["detr"]
    detector([data[0]])  # warm
    started = time.perf_counter()
    for i in range(16):
        detector([data[i % len(data)]])
    local_rate = 16 / (time.perf_counter() - started)
    rate = sum(answered) / served
    print(f"{sum(answered)}/{clients * requests} answered, {len(failures)} failed in {served:.1f} s: "
          f"{rate:.1f} img/s through Triton vs {local_rate:.1f} img/s one local Detector (x{rate / local_rate:.2f}); "
          f"batches formed by detr_model {{size: executions}} = {formed}")
    assert not failures, failures[:3]
    assert sum(answered) == clients * requests
    assert sum(size * count for size, count in formed.items()) == clients * requests
    assert max(formed) > 1, f"Triton never batched: {formed}"


@needs_server
def test_a_payload_that_is_not_an_image_gets_an_error_and_serving_goes_on(server, photo_folder, tmp_path):
    from tritonclient.utils import InferenceServerException

    from detr_deploy.serving import TritonDetector

    live = server.get()
    client = tritonclient.InferenceServerClient(live.http_url, connection_timeout=10, network_timeout=30)
    good = (photo_folder / "coffee.jpg").read_bytes()
    for payload, problem in ((b"this is not an image", "not an image"), (good[:200], "corrupt or truncated"),
                             (b"", "empty data")):
        image = tritonclient.InferInput("IMAGE", [1, 1], "BYTES")
        image.set_data_from_numpy(np.array([[payload]], dtype=np.object_))
        with pytest.raises(InferenceServerException) as caught:
            client.infer("shapes", [image])
        print(f"server said: {caught.value.message()}")
        assert "unreadable input: image 0" in caught.value.message() and problem in caught.value.message()
    (tmp_path / "notes.jpg").write_text("not a picture")
    with TritonDetector(live.http_url, "shapes", threshold=THRESHOLD, batch_size=4, timeout=30) as detector:
        results = detector([str(photo_folder / "coffee.jpg"), str(tmp_path / "notes.jpg"), good,
                            str(tmp_path / "missing.jpg")])
    assert results[1] == {"error": f"{tmp_path / 'notes.jpg'}: not an image, or a format Pillow cannot read",
                          "source": str(tmp_path / "notes.jpg")}
    assert results[3]["error"].endswith("no such file")
    assert "scores" in results[0] and "scores" in results[2]  # the rest of the batch was served
    assert client.is_server_ready()


@needs_server
def test_detr_infer_through_triton_writes_what_a_local_run_writes(server, artifacts, photo_folder, tmp_path):
    from detr_deploy.cli.args import run
    from detr_deploy.cli.infer import main

    live = server.get()
    assert run(main, [str(artifacts["detr"]), str(photo_folder), "-o", str(tmp_path / "local"),
                      "--threshold", str(THRESHOLD)]) == 0
    assert run(main, ["--triton", f"grpc://{live.grpc_url}", "--triton-model", "detr", str(photo_folder),
                      "-o", str(tmp_path / "served"), "--threshold", str(THRESHOLD), "--batch-size", "2"]) == 0
    mine = json.loads((tmp_path / "local/detections.json").read_text())
    theirs = json.loads((tmp_path / "served/detections.json").read_text())
    assert len(mine) == len(theirs) > 0
    for a, b in zip(mine, theirs):
        assert a["image_id"] == b["image_id"] and a["category_id"] == b["category_id"]
        assert abs(a["score"] - b["score"]) <= 1e-5 and np.allclose(a["bbox"], b["bbox"], atol=0.011)
    assert sorted(p.name for p in (tmp_path / "served").glob("*_det.jpg")) == \
        sorted(p.name for p in (tmp_path / "local").glob("*_det.jpg"))


@needs_server
def test_detr_infer_through_triton_writes_panoptic_files_as_a_local_run(server, artifacts, photo_folder, tmp_path):
    from detr_deploy.cli.args import run
    from detr_deploy.cli.infer import main

    live = server.get()
    assert run(main, [str(artifacts["panoptic"]), str(photo_folder), "-o", str(tmp_path / "local"), "--threshold",
                      "0", "--mask-threshold", "0.05", "--overlap-threshold", "0.1", "--instance-masks"]) == 0
    assert run(main, ["--triton", live.http_url, "--triton-model", "panoptic", str(photo_folder), "-o",
                      str(tmp_path / "served"), "--threshold", "0", "--batch-size", "2", "--instance-masks"]) == 0
    for name in ("panoptic.json", "instances.json"):
        mine = json.loads((tmp_path / "local" / name).read_text())
        theirs = json.loads((tmp_path / "served" / name).read_text())
        assert mine == theirs, name  # scores are written rounded to 6 decimals, as HF's
    pngs = sorted(p.name for p in (tmp_path / "local/panoptic").glob("*.png"))
    assert pngs and pngs == sorted(p.name for p in (tmp_path / "served/panoptic").glob("*.png"))
    for png in pngs:
        assert (tmp_path / "local/panoptic" / png).read_bytes() == (tmp_path / "served/panoptic" / png).read_bytes()
    assert sorted(p.name for p in (tmp_path / "served").glob("*_seg.jpg")) == \
        sorted(p.name for p in (tmp_path / "local").glob("*_seg.jpg"))


def test_detr_infer_triton_flags_are_checked_before_any_work(tmp_path):
    from detr_deploy.cli.infer import main

    with pytest.raises(SystemExit) as caught:
        main(["--triton", "localhost:1", "--device", "cuda", str(tmp_path)])
    assert caught.value.code == 2
    with pytest.raises(SystemExit) as caught:  # the task is the repository's (detr-triton --task)
        main(["--triton", "localhost:1", "--task", "instance", str(tmp_path)])
    assert caught.value.code == 2


def _silent_listener() -> tuple[socket.socket, int]:
    """A loopback port that accepts connections and never answers (a server that hangs)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    return sock, sock.getsockname()[1]


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_a_server_that_hangs_or_is_gone_gives_a_clear_error_within_the_timeout(protocol):
    from detr_deploy.errors import ServingError
    from detr_deploy.serving import TritonDetector
    from detr_deploy.serving.server import free_port

    listener, port = _silent_listener()
    try:
        for where in (f"127.0.0.1:{port}", f"127.0.0.1:{free_port()}"):  # hangs; refuses
            started = time.perf_counter()
            with pytest.raises(ServingError) as caught:
                TritonDetector(where, "shapes", protocol=protocol, timeout=2)
            took = time.perf_counter() - started
            print(f"{protocol} {where}: {took:.1f} s: {caught.value}")
            assert took < 10 and where in str(caught.value)
    finally:
        listener.close()


@needs_server
def test_detr_serve_prints_endpoints_and_stops_on_ctrl_c(repository, tmp_path):
    """detr-serve on free loopback ports: ready line, endpoints, then SIGINT -> exit 130 (bounded waits)."""
    from detr_deploy.serving.server import free_port

    small = tmp_path / "repo"  # the detr ensemble only: four models load faster than eight
    small.mkdir()
    for model in ("detr", "detr_preprocess", "detr_model", "detr_postprocess"):
        os.symlink(repository / model, small / model)
    ports = [str(free_port()) for _ in range(3)]
    env = dict(os.environ, TRITONSERVER=BINARY, TRITON_PYTHONPATH=PYTHONPATH)
    command = [sys.executable, "-c", "from detr_deploy.cli.serve import entry; entry()", str(small),
               "--http-port", ports[0], "--grpc-port", ports[1], "--metrics-port", ports[2], "--timeout", "120"]
    # a terminal's Ctrl-C reaches a process whose SIGINT is not ignored; a test run started in the background (as CI
    # may be) ignores SIGINT and children inherit that: give detr-serve the default disposition, as a shell would
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        lines, deadline = [], time.monotonic() + 150
        while time.monotonic() < deadline:
            line = process.stdout.readline()
            if not line:
                break
            lines.append(line.rstrip())
            if line.strip().startswith("metrics"):
                break
        print("\n".join(lines))
        assert lines and lines[0].startswith("ready: detr"), (lines, process.stderr.read() if process.poll() else "")
        assert f"127.0.0.1:{ports[0]}" in "\n".join(lines) and f"127.0.0.1:{ports[2]}/metrics" in "\n".join(lines)
        process.send_signal(signal.SIGINT)
        started = time.monotonic()
        try:  # detr-serve gives tritonserver 20 s to stop cleanly, then kills it: well within this bound
            status = process.wait(timeout=90)
        except subprocess.TimeoutExpired:
            process.kill()
            pytest.fail(f"detr-serve did not stop within 90 s of SIGINT; its stderr: {process.communicate()[1]}")
        print(f"stopped in {time.monotonic() - started:.1f} s")
        assert status == 130
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)


@needs_server
def test_a_client_whose_server_stops_gets_a_clear_error(server):
    """Last on purpose: stops the module's server under connected clients (a later test would restart it)."""
    from detr_deploy.errors import ServingError
    from detr_deploy.serving import TritonDetector

    live = server.get()
    image = np.zeros((64, 64, 3), np.uint8)
    clients = {protocol: TritonDetector(url, "detr", protocol=protocol, timeout=5)
               for protocol, url in (("http", live.http_url), ("grpc", live.grpc_url))}
    for client in clients.values():
        assert "scores" in client([image])[0]
    live.stop()
    for protocol, client in clients.items():
        started = time.perf_counter()
        with pytest.raises(ServingError) as caught:
            client([image])
        took = time.perf_counter() - started
        print(f"{protocol} after the server stopped: {took:.1f} s: {caught.value}")
        assert took < 15 and client.url in str(caught.value)
        client.close()
