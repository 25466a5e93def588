"""One self-describing checkpoint format: ``weights.safetensors`` + ``config.json`` in a folder.

``config.json`` holds everything needed to rebuild and use the model without the training config:

.. code-block:: json

    {"format": "colonseg-checkpoint", "version": 1,
     "arch": "unet", "init_kwargs": {"encoder": "...", "classes": 1, ...},
     "preprocessing": {"size": [256, 256], "mean": [...], "std": [...]},
     "class_names": ["polyp"], "labels": "binary", "threshold": 0.5, "postprocess": "",
     "tta": "none",
     "provenance": {...}, "metrics": {...}}

``labels`` names the label scheme (``binary`` or ``neopolyp``, see :mod:`colonseg.data.labels`);
``postprocess`` the Predictor's default post-processing (see :mod:`colonseg.postprocess`);
``tta`` the Predictor's default test-time augmentation (``none``, ``flip`` or ``d4``, see
:mod:`colonseg.engine.tta`; older checkpoints say ``true``/``false``: flip / none);
``trained_on`` the images the model was trained on, per dataset, as
:func:`colonseg.data.io.image_digest` (``evaluate`` warns when it scores them); ``packaged`` the
submodules whose weights are not stored because they are frozen ImageNet weights that the
installed packages provide (MAPSeg's encoder): loading builds the model with ``pretrained=True``
and takes them from there.

Example:
    >>> save_pretrained(model, meta, "runs/x/model")
    >>> model, meta = load_pretrained("runs/x/model")   # or a zoo name such as "default"
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from colonseg.data.io import write_atomic
from colonseg.engine.checkpoint_schema import (
    MAX_CONFIG_BYTES,
    check_config_json,
    checked_init_kwargs,
)
from colonseg.engine.tta import tta_mode
from colonseg.errors import ColonsegError
from colonseg.models.state_dict import read_state_dict

__all__ = [
    "ModelMeta",
    "ZOO_DIR",
    "NEW_DATA_MODEL",
    "list_zoo",
    "merge_trained_on",
    "load_pretrained",
    "read_meta",
    "resolve_model_path",
    "save_pretrained",
]

ZOO_DIR = Path(__file__).resolve().parents[1] / "weights"
# The zoo model recommended for frames from a hospital colonseg has not seen (trained on every
# labelled polyp set); `default` stays the PraNet-protocol model of the published comparisons.
NEW_DATA_MODEL = "polyp_general"
FORMAT = "colonseg-checkpoint"
_SAFETENSORS_DTYPES = {
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "F32": torch.float32,
    "F64": torch.float64,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}


@dataclass
class ModelMeta:
    """What a checkpoint says about its model."""

    arch: str
    init_kwargs: dict[str, Any]
    size: tuple[int, int] = (256, 256)
    mean: tuple[float, ...] = (0.5, 0.5, 0.5)
    std: tuple[float, ...] = (0.5, 0.5, 0.5)
    class_names: list[str] = field(default_factory=lambda: ["polyp"])
    labels: str = "binary"  # label scheme (colonseg.data.labels): binary or neopolyp
    threshold: float = 0.5
    postprocess: str = ""  # post-processing steps the Predictor applies by default
    tta: str = "none"  # the Predictor's default test-time augmentation: none, flip or d4
    provenance: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    packaged: list[str] = field(default_factory=list)  # submodules not stored (see above)
    # the images it was trained on: dataset name → sorted image digests (data.io.image_digest)
    trained_on: dict[str, list[str]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        pre = {"size": list(d.pop("size")), "mean": list(d.pop("mean")), "std": list(d.pop("std"))}
        return {"format": FORMAT, "version": 1, **d, "preprocessing": pre}

    @classmethod
    def from_json(cls, d: dict[str, Any], source: Path) -> ModelMeta:
        if d.get("format") != FORMAT or "arch" not in d or "init_kwargs" not in d:
            raise ColonsegError(
                f"{source}: not a colonseg config.json (needs format, arch, init_kwargs)"
            )
        pre = d.get("preprocessing", {})
        try:
            tta = tta_mode(d.get("tta"))
        except ColonsegError as exc:
            raise ColonsegError(f"{source}: {exc}") from None
        return cls(
            arch=d["arch"],
            init_kwargs=dict(d["init_kwargs"]),
            size=tuple(pre.get("size", (256, 256))),
            mean=tuple(pre.get("mean", (0.5, 0.5, 0.5))),
            std=tuple(pre.get("std", (0.5, 0.5, 0.5))),
            class_names=list(d.get("class_names", ["polyp"])),
            labels=str(d.get("labels", "binary")),
            threshold=float(d.get("threshold", 0.5)),
            postprocess=str(d.get("postprocess", "")),
            tta=tta,
            provenance=dict(d.get("provenance", {})),
            metrics=dict(d.get("metrics", {})),
            packaged=list(d.get("packaged", [])),
            trained_on={str(k): list(v) for k, v in d.get("trained_on", {}).items()},
        )


def merge_trained_on(*records: dict[str, list[str]]) -> dict[str, list[str]]:
    """The union of ``trained_on`` records (a fine-tuned model's and its parent's, an
    ensemble's members')."""
    merged: dict[str, set[str]] = {}
    for record in records:
        for name, digests in record.items():
            merged.setdefault(name, set()).update(digests)
    return {name: sorted(digests) for name, digests in merged.items()}


def _is_packaged(key: str, packaged: list[str]) -> bool:
    """Whether state-dict ``key`` lies in one of the ``packaged`` submodules (dotted paths such
    as ``encoder`` or an ensemble member's ``members.0.encoder``)."""
    return any(key == p or key.startswith(p + ".") for p in packaged)


def save_pretrained(
    model: nn.Module,
    meta: ModelMeta,
    folder: str | Path,
    half: bool = False,
    dtypes: dict[str, torch.dtype] | None = None,
) -> Path:
    """Write ``weights.safetensors`` (without ``meta.packaged`` submodules) and ``config.json``
    into ``folder``. Tensors are stored in fp16 with ``half``, else in their ``dtypes`` entry
    (the dtype a weight file had: no rounding beyond what it had) or as they are."""
    folder = Path(folder)
    state = {
        k: v.detach().cpu().contiguous()
        for k, v in model.state_dict().items()
        if not _is_packaged(k, meta.packaged)
    }
    if half:
        state = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    elif dtypes:
        state = {k: v.to(dtypes.get(k, v.dtype)) for k, v in state.items()}
    write_atomic(folder / "weights.safetensors", lambda tmp: save_file(state, str(tmp)))
    text = json.dumps(meta.to_json(), indent=2)
    write_atomic(folder / "config.json", lambda tmp: tmp.write_text(text))
    return folder


def list_zoo() -> list[str]:
    """Names of the trained checkpoints shipped with the package."""
    return sorted(p.parent.name for p in ZOO_DIR.glob("*/config.json"))


def resolve_model_path(model: str | Path) -> Path:
    """A zoo name or a checkpoint folder / ``config.json`` / weight file → the checkpoint folder."""
    if str(model) in list_zoo():
        return ZOO_DIR / str(model)
    path = Path(model)
    if path.is_file() and path.name == "config.json":
        return path.parent
    if path.is_dir() or path.is_file():
        return path if path.is_dir() else path.parent
    zoo = ", ".join(list_zoo()) or "none installed"
    raise ColonsegError(f"{model}: no such checkpoint (not a path, not a zoo model; zoo: {zoo})")


def stored_dtypes(model: str | Path) -> dict[str, torch.dtype]:
    """The dtype of every tensor in a checkpoint's weight file (zoo name or folder)."""
    path = resolve_model_path(model) / "weights.safetensors"
    try:  # from the file's header: no tensor is read
        with safe_open(str(path), "pt") as f:
            return {k: _SAFETENSORS_DTYPES[f.get_slice(k).get_dtype()] for k in f.keys()}
    except Exception as exc:
        raise ColonsegError(
            f"{path}: corrupt safetensors file ({exc.__class__.__name__})"
        ) from None


def read_meta(model: str | Path) -> ModelMeta:
    """What a zoo name's or checkpoint folder's ``config.json`` says, without loading weights."""
    return _read_config(resolve_model_path(model))


def _read_config(folder: Path) -> ModelMeta:
    """``folder/config.json``, size-limited and checked against the schema before use."""
    cfg_path = folder / "config.json"
    if not cfg_path.is_file():
        raise ColonsegError(f"{folder}: no config.json beside the weights (arch unknown)")
    if cfg_path.stat().st_size > MAX_CONFIG_BYTES:
        raise ColonsegError(f"{cfg_path}: {cfg_path.stat().st_size} bytes, too large for a config")
    try:
        d = json.loads(cfg_path.read_text())
    except json.JSONDecodeError as exc:
        raise ColonsegError(f"{cfg_path}: invalid JSON ({exc.msg} at line {exc.lineno})") from None
    except UnicodeDecodeError:
        raise ColonsegError(f"{cfg_path}: not a text file") from None
    if isinstance(d, dict) and d.get("format") == FORMAT:
        check_config_json(d, cfg_path)
    return ModelMeta.from_json(d if isinstance(d, dict) else {}, cfg_path)


def _memory_sides(arch: str, kwargs: dict, prefix: str = "") -> dict[str, int]:
    """State-dict prefix of every MAPSeg memory → the side of its stored frames."""
    if arch == "mapseg" and kwargs.get("memory", True):
        return {f"{prefix}memory.": int(kwargs.get("size", 256))}
    sides = {}
    for i, member in enumerate(kwargs.get("members", [])):
        sides |= _memory_sides(
            member["arch"], member.get("init_kwargs", {}), f"{prefix}members.{i}."
        )
    return sides


def _check_weight_header(path: Path, meta: ModelMeta) -> dict[str, tuple[int, ...]]:
    """Shapes of a ``.safetensors`` file's tensors from its header (no tensor is read), after
    checking any stored MAPSeg memory frames' PNG headers (nothing is decoded)."""
    from colonseg.models.mapseg import check_memory_streams

    try:
        with safe_open(str(path), "np") as f:
            shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
            for prefix, side in _memory_sides(meta.arch, meta.init_kwargs).items():
                if prefix + "encoded" in shapes and prefix + "lengths" in shapes:
                    if len(shapes[prefix + "lengths"]) != 1 or shapes[prefix + "lengths"][0] > 64:
                        raise ColonsegError(f"{path}: {prefix}lengths has the wrong shape")
                    try:
                        check_memory_streams(
                            f.get_tensor(prefix + "encoded"), f.get_tensor(prefix + "lengths"), side
                        )
                    except ColonsegError as exc:
                        where = prefix.removesuffix("memory.")  # an ensemble member's
                        raise ColonsegError(f"{path}: {where}{exc}") from None
    except ColonsegError:
        raise
    except Exception as exc:
        raise ColonsegError(
            f"{path}: corrupt safetensors file ({exc.__class__.__name__})"
        ) from None
    return shapes


def _check_shapes(
    path: Path, shapes: dict[str, tuple[int, ...]], reference: dict, packaged: list[str]
) -> None:
    """Refuse a weight file whose tensors do not fit the architecture, before reading them
    (a 1-D buffer the model creates empty, like a MAPSeg memory's PNG stream, has any length)."""
    expected = {k: tuple(v.shape) for k, v in reference.items() if not _is_packaged(k, packaged)}
    missing = sorted(set(expected) - set(shapes))
    if missing and set(shapes) <= set(reference):  # with other keys: load_state_dict says more
        raise ColonsegError(
            f"{path}: weights do not fit the architecture (missing {missing[0]}; "
            f"{len(missing)} tensors missing)"
        )
    for key, shape in shapes.items():
        want = expected.get(key, shape)
        if shape != want and not (len(want) == 1 and want[0] == 0 and len(shape) == 1):
            raise ColonsegError(
                f"{path}: weights do not fit the architecture ({key} is {list(shape)}, "
                f"the model's is {list(want)})"
            )


def load_pretrained(
    model: str | Path,
    weights: str | Path | None = None,
    files: Mapping[str, str | Path] | None = None,
) -> tuple[nn.Module, ModelMeta]:
    """Rebuild a model from a checkpoint folder or zoo name, in eval mode.

    ``config.json`` is checked against :mod:`colonseg.engine.checkpoint_schema` and the weight
    file's tensor shapes against the architecture before any weight is read, so a crafted
    checkpoint ends in a one-line error within a second and bounded memory.

    Args:
        model: zoo name, checkpoint folder, or its ``config.json``.
        weights: another weight file (``.safetensors``, ``.pth``, Lightning ``.ckpt``) for the same
            architecture; ``.pth`` files load with ``torch.load(weights_only=True)``.
        files: files the user named for the checkpoint's file fields (``sam_checkpoint``: a
            user's own ``medsam_vit_b.pth``); a path stored in ``config.json`` is never opened.
    """
    from colonseg.models import create_model

    folder = resolve_model_path(model)
    meta = _read_config(folder)
    init_kwargs = checked_init_kwargs(meta.arch, meta.init_kwargs, folder / "config.json", files)
    wpath = Path(weights) if weights is not None else folder / "weights.safetensors"
    if not wpath.is_file():
        raise ColonsegError(f"{wpath}: weight file not found")
    shapes = _check_weight_header(wpath, meta) if wpath.suffix == ".safetensors" else None
    net = create_model(meta.arch, **{**init_kwargs, "pretrained": bool(meta.packaged)})
    reference = net.state_dict()
    if shapes is not None:
        _check_shapes(wpath, shapes, reference, meta.packaged)
    state = read_state_dict(wpath)
    packaged = {k: v for k, v in reference.items() if _is_packaged(k, meta.packaged)}
    state = {k: v.to(reference[k].dtype) if k in reference else v for k, v in state.items()}
    state = {**packaged, **state}
    try:
        net.load_state_dict(state, strict=True)
    except (RuntimeError, ColonsegError) as exc:
        first = str(exc).splitlines()[1].strip() if "\n" in str(exc) else str(exc)
        raise ColonsegError(f"{wpath}: weights do not fit {meta.arch} ({first[:200]})") from None
    return net.eval(), meta
