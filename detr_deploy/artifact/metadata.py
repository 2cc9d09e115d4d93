# SPDX-License-Identifier: Apache-2.0
"""Artifact metadata: everything the runtime needs to run an ONNX file or engine, and nothing else.

Stored as one JSON document under the ONNX ``metadata_props`` key ``detr_deploy`` (and in an engine's sidecar
``<engine>.json``). Pure Python: the runtime reads it on edge devices.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from ..errors import ArtifactError

METADATA_KEY = "detr_deploy"
SCHEMA_VERSION = 2  # the newest metadata schema this version reads
IN_GRAPH_SCHEMA = 2  # documents of artifacts with pre-processing in the graph (older runtimes must refuse them)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class Preprocess:
    """How images become ``pixel_values``/``pixel_mask`` (the reference pipelines' eval transform).

    Attributes:
        resize: "shortest_edge" (scale the short side to ``shortest_edge``, long side capped at ``longest_edge``)
            or "fit" (largest size that fits ``input_size``, aspect kept; static artifacts).
        rounding: "hf" (Hugging Face image processor, default) or "official" (facebookresearch/fundamentalvision
            transforms; they differ by one pixel on the long side when the cap is active).
        input_size: (H, W) of a static artifact: images are padded bottom-right to it.
        rescale, mean, std: ``(x * rescale - mean) / std`` per RGB channel.
        in_graph: the artifact does all of this itself: it takes decoded images, input ``image`` uint8
            ``[batch, height, width, 3]`` (RGB; the images of one call share a size), and the runtime only stacks
            them (``detr-export --preprocess-in-graph``; ``detr_deploy.runtime.preprocess_graph``).
    """

    resize: str = "shortest_edge"
    shortest_edge: int = 800
    longest_edge: int = 1333
    rounding: str = "hf"
    input_size: tuple[int, int] | None = None
    rescale: float = 1 / 255
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    in_graph: bool = False


@dataclass
class Postprocess:
    """``kind``: "softmax-drop-last" (DETR) or "sigmoid-top-k" (Deformable DETR, ``top_k`` over queries x classes)."""

    kind: str = "softmax-drop-last"
    top_k: int = 100


@dataclass
class MSDAInfo:
    """How multi-scale deformable attention is represented: ``form`` "plugin" or "gridsample"."""

    form: str = "gridsample"
    plugin_name: str | None = None
    plugin_version: str | None = None
    plugin_namespace: str | None = None
    plugin_library: str | None = None  # None: NVIDIA's plugin in libnvinfer_plugin


@dataclass
class ArtifactMetadata:
    """The artifact's contract. Engines add ``tensorrt`` (version, GPU, compute capability, profiles, plugins).

    ``task`` is "detection" (outputs ``logits``, ``pred_boxes``) or "segmentation" (DETR panoptic: also
    ``pred_masks``); ``stuff_ids`` are the labels panoptic post-processing fuses (the others are things).
    ``family`` is "detr" or "deformable".
    """

    variant: str
    family: str
    num_queries: int
    num_classes: int
    id2label: dict[int, str]
    weights: dict[str, Any]
    preprocess: Preprocess = field(default_factory=Preprocess)
    postprocess: Postprocess = field(default_factory=Postprocess)
    inputs: dict[str, dict[str, Any]] = field(default_factory=dict)
    outputs: dict[str, dict[str, Any]] = field(default_factory=dict)
    msda: MSDAInfo | None = None
    precision: str = "fp32"
    opset: int = 18
    detr_deploy_version: str = ""
    tensorrt: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    task: str = "detection"
    stuff_ids: list[int] = field(default_factory=list)
    schema: int = 1

    @property
    def static_batch(self) -> int | None:
        """The fixed batch size of a static artifact, None when the batch is dynamic."""
        batch = self.inputs["image" if self.preprocess.in_graph else "pixel_values"]["shape"][0]
        return batch if isinstance(batch, int) else None

    @property
    def static_input_size(self) -> tuple[int, int] | None:
        """(H, W) a static artifact pads every image to, None when dynamic."""
        return tuple(self.preprocess.input_size) if self.preprocess.input_size else None

    def to_json(self) -> str:
        data = asdict(self)
        data["id2label"] = {str(k): v for k, v in self.id2label.items()}
        if self.preprocess.in_graph:
            data["schema"] = max(int(self.schema), IN_GRAPH_SCHEMA)
        else:  # the schema-1 document, readable by older versions
            del data["preprocess"]["in_graph"]
        return json.dumps(data, sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str, where: str = "artifact") -> ArtifactMetadata:
        try:
            data = json.loads(text)
            if int(data.get("schema", 0)) > SCHEMA_VERSION:
                raise ArtifactError(f"{where} was written by a newer detr-deploy (metadata schema {data['schema']}); "
                                    "upgrade detr-deploy")
            data["id2label"] = {int(k): v for k, v in data["id2label"].items()}
            pre = dict(data.get("preprocess") or {})
            for key in ("mean", "std", "input_size"):
                if pre.get(key) is not None:
                    pre[key] = tuple(pre[key])
            data["preprocess"] = Preprocess(**pre)
            data["postprocess"] = Postprocess(**(data.get("postprocess") or {}))
            data["msda"] = MSDAInfo(**data["msda"]) if data.get("msda") else None
            return cls(**data)
        except ArtifactError:
            raise
        except (KeyError, TypeError, ValueError) as exc:
            raise ArtifactError(f"{where} carries unreadable detr-deploy metadata ({exc}); re-export it") from exc


def read_onnx_metadata(model, where: str = "ONNX file") -> ArtifactMetadata:
    """Metadata of an ``onnx.ModelProto``; ArtifactError if it was not written by detr-deploy."""
    for prop in model.metadata_props:
        if prop.key == METADATA_KEY:
            return ArtifactMetadata.from_json(prop.value, where)
    raise ArtifactError(f"{where} has no detr-deploy metadata; export it with detr-export (the runtime needs the "
                        "pre/post-processing settings it records)")
