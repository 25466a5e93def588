"""ONNX export and an onnxruntime model that the Predictor runs like a torch one.

An exported ``.onnx`` file is self-describing: the checkpoint's ``config.json`` travels in the
ONNX metadata (key ``colonseg_config``), so ``Predictor.from_pretrained("model.onnx")`` needs
nothing else. Batch, height and width are dynamic axes.

Example:
    >>> export_onnx("default", "default.onnx")
    >>> predictor = Predictor.from_pretrained("default.onnx")            # onnxruntime
    >>> predictor = Predictor.from_pretrained("default", backend="onnx")  # exported on first use
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from colonseg.data.cache import default_cache_dir
from colonseg.data.io import write_atomic
from colonseg.data.sources import DataSource
from colonseg.engine.checkpoint import ModelMeta, load_pretrained
from colonseg.errors import ColonsegError

__all__ = ["OnnxModel", "cached_onnx", "export_onnx"]

META_KEY = "colonseg_config"
OPSET = 17


def _export(net: nn.Module, meta: ModelMeta, path: Path) -> Path:
    import onnx

    reason = getattr(net, "onnx_unsupported", None)  # a model whose traced graph would be wrong
    if reason:
        raise ColonsegError(f"{meta.arch} cannot be exported to ONNX: {reason}")
    h, w = meta.size
    dynamic = {0: "batch", 2: "height", 3: "width"}

    def write(tmp: Path) -> None:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                net.eval().float(),
                (torch.zeros(1, 3, h, w),),
                str(tmp),
                input_names=["image"],
                output_names=["logits"],
                dynamic_axes={"image": dynamic, "logits": dynamic},
                opset_version=OPSET,
                dynamo=False,
            )
        proto = onnx.load(str(tmp))
        entry = proto.metadata_props.add()
        entry.key, entry.value = META_KEY, json.dumps(meta.to_json())
        onnx.save(proto, str(tmp))

    return write_atomic(path, write)


def export_onnx(
    model: str | Path,
    out: str | Path,
    weights: str | Path | None = None,
    quantize: str | None = None,
    calibration: list[DataSource] | None = None,
    calibration_images: int = 64,
) -> Path:
    """Export a zoo name or checkpoint folder to ``out`` (``.onnx``) with its metadata.

    ``quantize="int8"`` writes a statically quantised model instead, calibrated on
    ``calibration_images`` frames of ``calibration`` (see :mod:`colonseg.engine.quantize`).

    Raises:
        ColonsegError: a bad output name, an unknown ``quantize`` mode, calibration sources
            without ``quantize`` or ``quantize`` without them, or a model ONNX cannot hold.
    """
    from colonseg.engine.quantize import QUANTIZE_MODES, check_calibration, quantize_int8

    out = Path(out)
    if out.suffix != ".onnx":
        raise ColonsegError(f"{out}: the output file must end in .onnx")
    if quantize is not None and quantize not in QUANTIZE_MODES:
        raise ColonsegError(
            f"Unknown quantisation '{quantize}'. Available: {', '.join(QUANTIZE_MODES)}."
        )
    if quantize is None and calibration:
        raise ColonsegError("calibration frames are for --quantize int8 (add it, or drop them)")
    if quantize is not None:
        check_calibration(calibration, calibration_images)
    net, meta = load_pretrained(model, weights)
    if quantize == "int8":
        return quantize_int8(net, meta, out, calibration, calibration_images)
    return _export(net, meta, out)


def cached_onnx(net: nn.Module, meta: ModelMeta) -> Path:
    """The ONNX file of ``net`` in the cache (``$COLONSEG_CACHE/onnx``), exported once."""
    h = hashlib.sha1(json.dumps(meta.to_json(), sort_keys=True).encode())
    for value in net.state_dict().values():
        h.update(value.detach().cpu().float().numpy().tobytes())
    path = default_cache_dir() / "onnx" / f"{meta.arch}_{h.hexdigest()[:16]}.onnx"
    return path if path.is_file() else _export(net, meta, path)


def check_external_data(path: Path) -> None:
    """Refuse an ONNX file any of whose tensors keeps its data in a file outside the model's
    folder (an absolute path, ``..``, or a link leading out): onnxruntime would read it."""
    import onnx

    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # noqa: BLE001 - onnx raises protobuf's and its own types
        raise ColonsegError(
            f"{path}: not a loadable ONNX model ({exc.__class__.__name__})"
        ) from None
    folder = path.resolve().parent
    tensors = list(proto.graph.initializer)
    for node in proto.graph.node:
        tensors += [a.t for a in node.attribute if a.HasField("t")]
    for tensor in tensors:
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            continue
        location = next((e.value for e in tensor.external_data if e.key == "location"), "")
        target = (folder / location).resolve()
        if Path(location).is_absolute() or not target.is_relative_to(folder):
            raise ColonsegError(
                f"{path}: tensor '{tensor.name}' keeps its data outside the model's folder "
                f"({location!r}); refused"
            )


class OnnxModel:
    """An onnxruntime session with the torch-model call the Predictor uses:
    ``model(x: (B, 3, H, W) float tensor) -> logits tensor`` (fp32 in and out, also for an int8
    model, whose graph quantises and dequantises inside)."""

    def __init__(self, path: str | Path, threads: int | None = None) -> None:
        import onnxruntime as ort

        self.path = Path(path)
        check_external_data(self.path)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or int(os.environ.get("OMP_NUM_THREADS", 0))
        try:
            self.session = ort.InferenceSession(
                str(self.path), options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime raises its own exception types
            raise ColonsegError(
                f"{self.path}: not a loadable ONNX model ({exc.__class__.__name__})"
            ) from None

    def meta(self) -> ModelMeta:
        props = self.session.get_modelmeta().custom_metadata_map
        if META_KEY not in props:
            raise ColonsegError(
                f"{self.path}: no colonseg metadata (export it with `colonseg export`)"
            )
        return ModelMeta.from_json(json.loads(props[META_KEY]), self.path)

    @property
    def precision(self) -> str:
        """``int8`` for a model quantised by ``colonseg export --quantize int8``, else ``fp32``."""
        props = self.session.get_modelmeta().custom_metadata_map
        config = json.loads(props.get(META_KEY, "{}"))
        return "int8" if "quantization" in config.get("provenance", {}) else "fp32"

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        image = np.ascontiguousarray(x.detach().float().cpu().numpy())
        return torch.from_numpy(self.session.run(None, {"image": image})[0])
