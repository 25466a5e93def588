"""Static int8 quantisation of an exported ONNX model, calibrated on training frames.

onnxruntime's static quantiser (QDQ format: ``QuantizeLinear``/``DequantizeLinear`` pairs around
int8 weights, one scale per output channel; symmetric int8 activations, MinMax ranges) needs
example inputs to fix each activation's range. They come from ``calibration``: dataset folders
(any layout :mod:`colonseg.data.layouts` reads, with an optional split) or plain image folders,
of which ``n_images`` are drawn with a fixed seed and preprocessed exactly as the
:class:`~colonseg.engine.predict.Predictor` preprocesses them. Use frames the model was trained
on (a checkpoint records only their digests, so they must be given): the ranges then fit what the
model sees, and no test image leaks into the file.

The nodes that compute shapes (the padding of ``tf_`` encoders' "same" convolutions) stay in
float: quantised, they resized feature maps, and with them and asymmetric uint8 activations the
``default`` model's masks lost about 0.1 Dice on its test sets (docs/benchmarks.md, int8 ONNX).

The result is an ordinary colonseg ``.onnx`` file (``Predictor.from_pretrained("m.int8.onnx")``,
``colonseg predict --model m.int8.onnx``); its embedded config records what calibrated it under
``provenance.quantization``.

Example:
    >>> calibration = [DataSource("../shared/datasets/kvasir-seg", split="pranet_train")]
    >>> export_onnx("default", "default.int8.onnx", quantize="int8", calibration=calibration)
    >>> Predictor.from_pretrained("default.int8.onnx").settings()   # '352×352, int8, ...'
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from colonseg.data.io import collect_images, image_digest, read_image, write_atomic
from colonseg.data.layouts import detect_layout, find_pairs
from colonseg.data.sources import DataSource
from colonseg.engine.checkpoint import ModelMeta
from colonseg.errors import ColonsegError

__all__ = ["QUANTIZE_MODES", "calibration_files", "check_calibration", "quantize_int8"]

QUANTIZE_MODES = ("int8",)
SEED = 0


def check_calibration(calibration: list[DataSource] | None, n_images: int) -> None:
    """Refuse quantising without calibration frames (before any model is loaded).

    Raises:
        ColonsegError: no calibration source, or ``n_images`` < 1.
    """
    if not calibration:
        raise ColonsegError(
            "--quantize int8 needs calibration frames: --calibration FOLDER (the model's "
            "training images, e.g. a dataset with --calibration-split pranet_train)"
        )
    if n_images < 1:
        raise ColonsegError(f"--calibration-images {n_images}: give at least 1")


def calibration_files(sources: list[DataSource], n_images: int) -> list[Path]:
    """``n_images`` image files drawn (seeded, in listing order) from the union of ``sources``:
    each a dataset folder with its split, or a plain folder of images (no layout, no split)."""
    files: list[Path] = []
    for s in sources:
        try:
            layout = detect_layout(s.path) if s.layout == "auto" else s.layout
        except ColonsegError:
            if s.split is not None or not Path(s.path).is_dir():
                raise
            files += collect_images([s.path])  # a plain folder of frames
            continue
        files += [p.image for p in find_pairs(s.path, layout, s.split, require_masks=False)]
    if len(files) > n_images:
        keep = np.random.default_rng(SEED).choice(len(files), n_images, replace=False)
        files = [files[i] for i in sorted(keep)]
    return files


def _shape_nodes(graph: Any) -> list[str]:
    """The nodes that compute shapes, not features: those fed only by ``Shape`` nodes and
    constants (the padding of ``tf_`` encoders' "same" convolutions, resize sizes). Quantised,
    their small integers come out wrong and the feature maps change size."""
    constants = {i.name for i in graph.initializer}
    values: set[str] = set()
    names = []
    for node in graph.node:  # in topological order
        inputs = [i for i in node.input if i and i not in constants]
        if node.op_type in ("Shape", "Constant") or (inputs and all(i in values for i in inputs)):
            values.update(node.output)
            names.append(node.name)
    return names


def _inputs(net: nn.Module, meta: ModelMeta, files: list[Path]) -> Iterator[dict[str, np.ndarray]]:
    """The onnx inputs of ``files``, one image each, as the Predictor would feed them."""
    from colonseg.engine.predict import Predictor

    predictor = Predictor(net, meta, device="cpu", precision="fp32")
    for f in files:
        yield {"image": predictor.preprocess([read_image(f)]).numpy()}


def _record(meta: ModelMeta, sources: list[DataSource], files: list[Path]) -> ModelMeta:
    """``meta`` with what calibrated the int8 model under ``provenance.quantization``."""
    import onnxruntime

    seen = {d for digests in meta.trained_on.values() for d in digests}
    record: dict[str, Any] = {
        "mode": "int8",
        "method": "onnxruntime static, QDQ, int8 weights per channel, int8 activations "
        "(symmetric), MinMax",
        "onnxruntime": onnxruntime.__version__,
        "calibration": [dataclasses.asdict(s) for s in sources],
        "calibration_images": len(files),
        "calibration_seed": SEED,
        "calibration_digests": [image_digest(f) for f in files],
    }
    if seen:  # how many of them the checkpoint records as training images
        record["calibration_trained_on"] = sum(d in seen for d in record["calibration_digests"])
    return dataclasses.replace(meta, provenance={**meta.provenance, "quantization": record})


def quantize_int8(
    net: nn.Module,
    meta: ModelMeta,
    out: str | Path,
    calibration: list[DataSource],
    n_images: int = 64,
) -> Path:
    """Export ``net`` to ONNX, quantise it to int8 calibrated on ``n_images`` frames of
    ``calibration``, and write it to ``out`` with ``meta`` (plus the calibration record) embedded.

    Raises:
        ColonsegError: no calibration source, or a source that is missing or holds no images.
    """
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from colonseg.engine.onnx_backend import META_KEY, _export

    check_calibration(calibration, n_images)
    files = calibration_files(calibration, n_images)

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.inputs = _inputs(net, meta, files)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.inputs, None)

    recorded = _record(meta, calibration, files)
    with tempfile.TemporaryDirectory(prefix="colonseg-int8-") as tmp:
        fp32, prepared, int8 = (Path(tmp) / n for n in ("fp32.onnx", "prep.onnx", "int8.onnx"))
        _export(net, meta, fp32)
        quant_pre_process(str(fp32), str(prepared), skip_symbolic_shape=True)
        quantize_static(
            str(prepared),
            str(int8),
            Reader(),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QInt8,
            weight_type=QuantType.QInt8,
            nodes_to_exclude=_shape_nodes(onnx.load(str(prepared)).graph),
            calibrate_method=CalibrationMethod.MinMax,
            extra_options={"ActivationSymmetric": True},
        )
        proto = onnx.load(str(int8))
        del proto.metadata_props[:]
        entry = proto.metadata_props.add()
        entry.key, entry.value = META_KEY, json.dumps(recorded.to_json())
        return write_atomic(out, lambda path: onnx.save(proto, str(path)))
