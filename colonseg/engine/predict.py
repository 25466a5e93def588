"""``Predictor``: the one place that turns images into probabilities and masks.

Every consumer of a trained model (``predict``, ``evaluate``, the demo, the app, export) goes
through it; nothing else resizes, normalises or thresholds images for inference.

Example:
    >>> predictor = Predictor.from_pretrained("default")
    >>> out = predictor.predict(read_image("frame.jpg"))
    >>> out.prob.shape, out.mask.max()           # (H, W) float32 in [0, 1], uint8 {0, 1}

Multi-class models (``labels: neopolyp``) also fill ``out.classes`` (class map, 0 = background)
and ``out.probs`` (class probabilities); ``out.prob`` is then 1 - p(background).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import nn

from colonseg.data.datamodule import prepare_images
from colonseg.data.field_of_view import erase_text
from colonseg.data.labels import decide, get_scheme
from colonseg.device import native_bf16, resolve_device
from colonseg.engine.checkpoint import ModelMeta, list_zoo, load_pretrained, resolve_model_path
from colonseg.engine.frozen_graph import GRAPHS, freeze_forward
from colonseg.engine.tta import TTA_LABELS, average_views, tta_mode
from colonseg.errors import ColonsegError
from colonseg.postprocess import PostProcess

__all__ = ["AUTO_FREEZE_AFTER", "Prediction", "Predictor", "load_refiner"]

# graph="auto" freezes the forward pass after this many eager batches (of one input size): a
# folder of a few dozen images runs eagerly (tracing plus the graph's two profiling runs cost
# ~3 s), a video or a large folder pays once and then runs 20–30 % faster.
AUTO_FREEZE_AFTER = 8


@lru_cache(maxsize=4)
def _load_refiner(folder: str, stamp: tuple) -> tuple[nn.Module, ModelMeta]:
    return load_pretrained(folder)


def load_refiner(name: str | Path, classes: int) -> nn.Module:
    """The region refiner that the ``refine=NAME`` post-processing step names (zoo name or
    checkpoint folder), loaded once while its files are unchanged.

    Raises:
        ColonsegError: not a refiner checkpoint, or it refines another number of classes.
    """
    folder = resolve_model_path(name).resolve()
    files = [folder / "config.json", folder / "weights.safetensors"]
    stamp = tuple((f.stat().st_mtime_ns, f.stat().st_size) for f in files if f.is_file())
    net, meta = _load_refiner(str(folder), stamp)
    if meta.arch != "region_refiner":
        raise ColonsegError(f"refine={name}: a {meta.arch} checkpoint, not a region refiner")
    if net.classes != classes:
        raise ColonsegError(
            f"refine={name}: the refiner refines {net.classes} classes, the model has {classes}"
        )
    return net


@dataclass
class Prediction:
    """One image's prediction, at the image's size.

    ``prob (H, W) float32``: polyp probability; ``mask (H, W) uint8`` {0, 1}; ``classes (H, W)
    uint8``: class map (the mask for binary models); ``probs (C, H, W) float32``: class
    probabilities of multi-class models, background first (None for binary models).
    """

    prob: np.ndarray
    mask: np.ndarray
    classes: np.ndarray | None = None
    probs: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.classes is None:
            self.classes = self.mask


class Predictor:
    """Resize → normalise → model → sigmoid/softmax (→ TTA) → resize back → threshold →
    post-processing.

    Args:
        model: a network returning logits ``(B, C, H, W)`` (C = 1: sigmoid, else softmax).
        meta: its checkpoint metadata (input size, mean/std, threshold).
        device: ``"cpu"``, ``"cuda"`` or ``"auto"``.
        tta: test-time augmentation, ``"none"``, ``"flip"`` or ``"d4"`` (see
            :mod:`colonseg.engine.tta`; ``True`` means flip); None uses the checkpoint's default.
        threshold: overrides the checkpoint's threshold.
        size: overrides the checkpoint's input size (square side in pixels).
        precision: ``"fp32"``, ``"bf16"`` (autocast) or ``"auto"``: bf16 where the hardware runs
            it natively (CPUs with AVX512-BF16/AMX, CUDA GPUs with bf16), else fp32. On the
            development CPU bf16 doubles throughput and changes test-set Dice by < 0.001.
        postprocess: a post-processing spec (see :mod:`colonseg.postprocess`); None uses the
            checkpoint's recorded default, ``"none"`` switches it off.
        graph: ``"frozen"``: a torch model on the CPU runs as a frozen TorchScript graph,
            traced on its first batch (see :mod:`colonseg.engine.frozen_graph`; ~1.5 s once,
            then 20–30 % faster; probabilities equal up to bf16 rounding); ``"auto"``: the same
            after ``AUTO_FREEZE_AFTER`` eager batches (a short run does not pay for the trace
            and the graph's first, profiling runs); ``"eager"``.
            Elsewhere (GPU, ONNX) it has no effect.

    ``model`` may also be an :class:`~colonseg.engine.onnx_backend.OnnxModel` (onnxruntime on
    the CPU, fp32, or int8 for a ``colonseg export --quantize int8`` file);
    ``from_pretrained(..., backend="onnx")`` builds one.
    """

    def __init__(
        self,
        model: nn.Module,
        meta: ModelMeta,
        device: str = "auto",
        tta: bool | str | None = None,
        threshold: float | None = None,
        size: int | None = None,
        precision: str = "auto",
        postprocess: str | PostProcess | None = None,
        graph: str = "eager",
    ) -> None:
        if device == "auto":
            device = resolve_device() if isinstance(model, nn.Module) else "cpu"
        if precision not in ("auto", "fp32", "bf16"):
            raise ColonsegError(f"Unknown precision '{precision}'. Available: auto, bf16, fp32.")
        self.device = torch.device(device)
        if isinstance(model, nn.Module):
            self.model = model.eval().to(self.device).to(memory_format=torch.channels_last)
        elif self.device.type != "cpu":
            raise ColonsegError("the onnx backend runs on the CPU: use --device cpu")
        else:
            self.model, precision = model, getattr(model, "precision", "fp32")  # onnx: fp32/int8
        if precision == "auto":
            precision = "bf16" if native_bf16(self.device) else "fp32"
        self.meta = meta
        self.tta = meta.tta if tta is None else tta
        self.threshold = meta.threshold if threshold is None else float(threshold)
        self.size = (size, size) if size else tuple(meta.size)
        self.precision = precision
        if graph not in GRAPHS:
            raise ColonsegError(f"Unknown graph '{graph}'. Available: {', '.join(GRAPHS)}.")
        freezable = isinstance(model, nn.Module) and self.device.type == "cpu"
        self.graph = graph if freezable else "eager"  # frozen graphs: torch models on the CPU
        self._frozen: dict[tuple[int, ...], Callable] = {}  # input (C, H, W) → forward pass
        self._seen: dict[tuple[int, ...], int] = {}  # graph="auto": eager batches per input size
        self.scheme = get_scheme(meta.labels)
        if meta.arch == "region_refiner":
            raise ColonsegError(
                "a region refiner is a post-processing step: apply it to a model's predictions "
                "with --postprocess refine=FOLDER"
            )
        default = postprocess is None
        if default:
            postprocess = meta.postprocess
        self.post = (
            postprocess if isinstance(postprocess, PostProcess) else PostProcess.parse(postprocess)
        )
        if default and self.post.refine and self.post.refine not in list_zoo():
            raise ColonsegError(  # colonseg opens only the files its user names
                f"the checkpoint's default post-processing names a file (refine="
                f"{self.post.refine[:120]}); pass it yourself with --postprocess"
            )
        self._refiner: tuple[str, nn.Module] | None = None  # (spec, refiner) last loaded
        if self.post.refine:  # a missing, wrong or binary refiner fails here, not mid-run
            self.refiner()

    @property
    def tta(self) -> str:
        """The test-time augmentation mode: ``none``, ``flip`` or ``d4``."""
        return self._tta

    @tta.setter
    def tta(self, value: bool | str | None) -> None:
        self._tta = tta_mode(value)

    @classmethod
    def from_pretrained(
        cls,
        model: str | Path = "default",
        weights: str | Path | None = None,
        backend: str = "torch",
        files: Mapping[str, str | Path] | None = None,
        **kwargs,
    ) -> Predictor:
        """Load a zoo name, checkpoint folder (see :func:`load_pretrained`, also for ``files``)
        or exported ``.onnx``.

        ``backend="onnx"`` runs a torch checkpoint through onnxruntime, exporting it once into
        the cache; an ``.onnx`` file always runs on onnxruntime.
        """
        from colonseg.engine.onnx_backend import OnnxModel, cached_onnx

        if backend not in ("torch", "onnx"):
            raise ColonsegError(f"Unknown backend '{backend}'. Available: onnx, torch.")
        if str(model).endswith(".onnx"):
            if weights is not None:
                raise ColonsegError(f"{model}: an ONNX model carries its weights (drop --weights)")
            onnx_model = OnnxModel(model)
            return cls(onnx_model, onnx_model.meta(), **kwargs)
        net, meta = load_pretrained(model, weights, files)
        if backend == "onnx":
            return cls(OnnxModel(cached_onnx(net, meta)), meta, **kwargs)
        return cls(net, meta, **kwargs)

    def settings(self) -> str:
        """What this Predictor does, in one line (evaluate's report and console say it)."""
        h, w = self.size
        post = f"post-processing {self.post.spec()}" if self.post else "no post-processing"
        tta = TTA_LABELS[self.tta]
        return f"{h}×{w}, {self.precision}, {tta}, threshold {self.threshold:g}, {post}"

    def refiner(self) -> nn.Module | None:
        """The region refiner of the ``refine`` post-processing step (None when it is off)."""
        if not self.post.refine:
            return None
        if self.scheme.model_channels == 1:
            raise ColonsegError(
                f"refine={self.post.refine}: refines multi-class models' class probabilities; "
                f"this {self.meta.arch} is binary (labels: {self.meta.labels})"
            )
        if self._refiner is None or self._refiner[0] != self.post.refine:  # once, not per frame
            net = load_refiner(self.post.refine, self.scheme.model_channels).to(self.device)
            self._refiner = (self.post.refine, net)
        return self._refiner[1]

    def preprocess(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        """RGB uint8 images of any sizes → normalised ``(B, 3, S, S)`` tensor (with ``fov``
        post-processing, text burnt into the mucosa painted over first)."""
        if self.post.fov:
            images = [erase_text(image) for image in images]
        return prepare_images(images, self.size, self.meta.mean, self.meta.std)

    def _activate(self, logits: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        return logits.sigmoid() if logits.shape[1] == 1 else logits.softmax(1)

    @torch.inference_mode()
    def predict_torch(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised ``(B, 3, S, S)`` → probabilities ``(B, C, S, S)`` at model resolution."""
        x = x.to(self.device).contiguous(memory_format=torch.channels_last)
        with torch.autocast(self.device.type, torch.bfloat16, enabled=self.precision == "bf16"):
            return average_views(lambda v: self._activate(self._forward(v)), x, self.tta)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.graph == "eager":
            return self.model(x)
        key = tuple(x.shape[1:])
        if self.graph == "auto" and self._seen.get(key, 0) < AUTO_FREEZE_AFTER:  # a short run
            self._seen[key] = self._seen.get(key, 0) + 1  # does not pay for the trace
            return self.model(x)
        if key not in self._frozen:  # traced once per input size; eager when it fails its check
            graph, why = freeze_forward(self.model, x, self.precision == "bf16", self._activate)
            if graph is None:
                print(f"note: {self.meta.arch} runs eagerly: {why}", file=sys.stderr)
            self._frozen[key] = graph or self.model
        return self._frozen[key](x)

    def finish(self, probs: np.ndarray, image: np.ndarray) -> Prediction:
        """Model-resolution probabilities ``(C, S, S)`` of ``image`` → :class:`Prediction` at the
        image's size: (refine, smooth,) resize, threshold, post-process."""
        shape = image.shape[:2]
        probs = probs.astype(np.float32, copy=False)
        probs = self.post.refine_probs(probs, image, self.refiner())
        probs = self.post.smooth_probs(probs)
        full = cv2.resize(probs.transpose(1, 2, 0), (shape[1], shape[0]), cv2.INTER_LINEAR)
        full = np.clip(full.reshape(shape[0], shape[1], -1), 0.0, 1.0).astype(np.float32)
        full = self.post.restrict(np.ascontiguousarray(full.transpose(2, 0, 1)), image)
        prob, classes = decide(full, self.threshold)
        mask = (classes > 0).astype(np.uint8)
        class_probs = full if full.shape[0] > 1 else None
        if self.post:
            mask, classes = self.post(prob, mask, class_probs)
        return Prediction(prob=prob, mask=mask, classes=classes, probs=class_probs)

    def predict_batch(self, images: Sequence[np.ndarray]) -> list[Prediction]:
        """Predict several RGB uint8 images (any sizes) in one forward pass."""
        probs = self.predict_torch(self.preprocess(images)).cpu().numpy()
        return [self.finish(p, im) for p, im in zip(probs, images, strict=True)]

    def predict(self, image: np.ndarray) -> Prediction:
        """Predict one RGB uint8 image ``(H, W, 3)``."""
        return self.predict_batch([image])[0]

    @property
    def takes_box(self) -> bool:
        """Whether the model can also be prompted with a box (Automatic MedSAM)."""
        return isinstance(self.model, nn.Module) and hasattr(self.model, "decode")

    @torch.inference_mode()
    def box_probs(self, image: np.ndarray, box: Sequence[float]) -> np.ndarray:
        """Model-resolution probabilities ``(1, S, S)`` of ``image`` when the model is prompted
        with ``box`` (``x0, y0, x1, y1`` in image pixels) instead of finding the polyp itself.

        Raises:
            ColonsegError: the model takes no box, or the box is empty or outside the image.
        """
        if not self.takes_box:
            raise ColonsegError(f"{self.meta.arch}: this model takes no box prompt")
        h, w = image.shape[:2]
        x0, y0, x1, y1 = (float(v) for v in box)
        x0, x1 = sorted((min(max(x0, 0.0), w), min(max(x1, 0.0), w)))
        y0, y1 = sorted((min(max(y0, 0.0), h), min(max(y1, 0.0), h)))
        if x1 - x0 < 1 or y1 - y0 < 1:
            raise ColonsegError(f"box {tuple(box)}: empty or outside the {w}x{h} image")
        sh, sw = self.size
        scaled = torch.tensor([[x0 * sw / w, y0 * sh / h, x1 * sw / w, y1 * sh / h]])
        x = self.preprocess([image]).to(self.device)
        with torch.autocast(self.device.type, torch.bfloat16, enabled=self.precision == "bf16"):
            logits = self.model.decode(self.model.embed(x), boxes=scaled.to(self.device))
        return self._activate(logits)[0].cpu().numpy()

    @property
    def has_attention(self) -> bool:
        return hasattr(self.model, "forward_with_attention")

    @torch.inference_mode()
    def attention_maps(self, image: np.ndarray) -> dict[str, np.ndarray]:
        """The model's attention maps for one image, each ``(H, W)`` float32 in [0, 1].

        Raises:
            ColonsegError: the architecture has no attention maps (only ``attention_unet`` has).
        """
        if not self.has_attention:
            raise ColonsegError(f"{self.meta.arch}: this architecture has no attention maps")
        x = self.preprocess([image]).to(self.device).contiguous(memory_format=torch.channels_last)
        with torch.autocast(self.device.type, torch.bfloat16, enabled=self.precision == "bf16"):
            _, maps = self.model.forward_with_attention(x)
        h, w = image.shape[:2]
        return {
            k: cv2.resize(v[0, 0].float().cpu().numpy(), (w, h), interpolation=cv2.INTER_LINEAR)
            for k, v in maps.items()
        }
