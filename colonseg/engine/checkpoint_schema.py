"""What a checkpoint's ``config.json`` may say, checked before anything is built or read.

A checkpoint folder can come from anywhere (a colleague, a web upload to ``colonseg app``), so
its ``config.json`` is treated as untrusted input:

- only the keys :class:`~colonseg.engine.checkpoint.ModelMeta` writes, each of its type and in a
  sane range (input size at most 2048², at most 64 classes, 8 ensemble members);
- the architecture must be registered here, and every ``encoder`` a name of the local timm
  registry (no ``hf-hub:`` or ``org/name``: nothing is downloaded);
- model arguments (``init_kwargs``) are JSON scalars and short lists whose integers stay below
  :data:`MAX_INT` (channel widths), so building the model cannot exhaust memory;
- fields that name a file (:data:`PATH_KEYS`) are never opened from the checkpoint's say-so:
  ``encoder_weights`` is not needed to load (the weight file holds the trained encoder), and a
  SAM backbone file must be given by the user (``--sam-checkpoint``) — ``files`` in
  :func:`checked_init_kwargs`.

Every refusal is one :class:`~colonseg.errors.ColonsegError` line naming the file and the key.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from colonseg.errors import ColonsegError

__all__ = [
    "MAX_CONFIG_BYTES",
    "MAX_INT",
    "PATH_KEYS",
    "check_config_json",
    "checked_init_kwargs",
]

MAX_CONFIG_BYTES = 16 * 2**20  # trained_on lists of a few thousand digests take ~100 kB
MAX_INT = 4096  # the widest channel count or side a model argument may ask for
MAX_LIST = 64
MAX_STRING = 256
MAX_MEMBERS = 8
MAX_SIDE = 2048
# per-key bounds tighter than MAX_INT: what each allocates grows with the product
_INT_LIMITS = {"classes": 64, "memory_size": 64, "size": 1024, "max_boxes": 16, "num_points": 16}
# per-architecture bounds (key → (low, high)) where a generic key means more for one arch
_ARCH_LIMITS = {"region_refiner": {"width": (1, 256), "classes": (2, 64)}}
PATH_KEYS = ("encoder_weights", "sam_checkpoint")
_TOP_KEYS = {
    "format": str,
    "version": int,
    "arch": str,
    "init_kwargs": dict,
    "preprocessing": dict,
    "class_names": list,
    "labels": str,
    "threshold": (int, float),
    "postprocess": str,
    "tta": (str, bool, type(None)),
    "provenance": dict,
    "metrics": dict,
    "packaged": list,
    "trained_on": dict,
}


def _fail(source: Path, what: str) -> ColonsegError:
    return ColonsegError(f"{source}: {what}")


def _check_value(value: Any, key: str, source: Path, depth: int = 0) -> None:
    """JSON scalars and short lists/dicts only, integers within their bound."""
    if depth > 4:
        raise _fail(source, f"init_kwargs.{key} is nested too deeply")
    if value is None or isinstance(value, bool):
        return
    if isinstance(value, int):
        limit = _INT_LIMITS.get(key.rsplit(".", 1)[-1], MAX_INT)
        if not -limit <= value <= limit:
            raise _fail(source, f"init_kwargs.{key} = {value} is out of range (at most {limit})")
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise _fail(source, f"init_kwargs.{key} is not a finite number")
        return
    if isinstance(value, str):
        if len(value) > MAX_STRING:
            raise _fail(source, f"init_kwargs.{key} is a string of {len(value)} characters")
        return
    if isinstance(value, list):
        if len(value) > MAX_LIST:
            raise _fail(source, f"init_kwargs.{key} lists {len(value)} items (at most {MAX_LIST})")
        for item in value:
            _check_value(item, key, source, depth + 1)
        return
    if isinstance(value, dict):
        for k, v in value.items():
            _check_value(v, f"{key}.{k}", source, depth + 1)
        return
    raise _fail(source, f"init_kwargs.{key} has an unsupported type")


def _check_encoder(name: Any, key: str, source: Path) -> None:
    import timm

    if not isinstance(name, str) or ":" in name or "/" in name or not timm.is_model(name):
        raise _fail(
            source,
            f"{key} = {name!r} is not an encoder of the local timm registry "
            "(colonseg never downloads a model)",
        )


def _check_model(arch: Any, kwargs: Any, source: Path, prefix: str = "") -> None:
    from colonseg.models import list_models
    from colonseg.models.medsam import BACKBONES

    if not isinstance(arch, str) or arch not in list_models():
        raise _fail(source, f"{prefix}arch = {arch!r} is not a colonseg architecture")
    if not isinstance(kwargs, dict):
        raise _fail(source, f"{prefix}init_kwargs must be a mapping")
    for key, value in kwargs.items():
        if not isinstance(key, str) or not key.isidentifier():
            raise _fail(source, f"{prefix}init_kwargs has an invalid key {key!r}")
        if key == "members":
            if arch != "ensemble" or not isinstance(value, list):
                raise _fail(source, f"{prefix}init_kwargs.members is only a list of an ensemble")
            if not 1 <= len(value) <= MAX_MEMBERS:
                raise _fail(source, f"an ensemble of {len(value)} members (1 to {MAX_MEMBERS})")
            for i, member in enumerate(value):
                if not isinstance(member, dict):
                    raise _fail(source, f"init_kwargs.members[{i}] must be a mapping")
                _check_model(
                    member.get("arch"), member.get("init_kwargs", {}), source, f"members[{i}]."
                )
            continue
        _check_value(value, f"{prefix}{key}", source)
        if key == "encoder":
            _check_encoder(value, f"{prefix}init_kwargs.encoder", source)
        elif key == "backbone" and value not in BACKBONES:
            raise _fail(source, f"{prefix}init_kwargs.backbone = {value!r} is not a SAM backbone")
        low, high = _ARCH_LIMITS.get(arch, {}).get(key, (None, None))
        if low is not None and not (isinstance(value, int) and low <= value <= high):
            raise _fail(source, f"{prefix}init_kwargs.{key} = {value!r} ({low} to {high})")


def _check_preprocessing(pre: dict, source: Path) -> None:
    size = pre.get("size", [256, 256])
    if (
        not isinstance(size, list)
        or len(size) != 2
        or not all(isinstance(s, int) and 16 <= s <= MAX_SIDE for s in size)
    ):
        raise _fail(source, f"preprocessing.size = {size!r} (two sides of 16 to {MAX_SIDE})")
    for key in ("mean", "std"):
        values = pre.get(key, [0.5, 0.5, 0.5])
        if (
            not isinstance(values, list)
            or len(values) != 3
            or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in values)
            or (key == "std" and min(values) <= 0)
        ):
            raise _fail(source, f"preprocessing.{key} = {values!r} (three finite numbers)")


def check_config_json(d: Any, source: Path) -> None:
    """Refuse a ``config.json`` whose keys, types or values a colonseg checkpoint never has."""
    from colonseg.data.labels import SCHEMES

    if not isinstance(d, dict):
        raise _fail(source, "not a colonseg config.json (a JSON object is expected)")
    unknown = sorted(set(d) - set(_TOP_KEYS))
    if unknown:
        raise _fail(source, f"unknown keys {', '.join(map(repr, unknown))[:200]}")
    for key, kind in _TOP_KEYS.items():
        if key in d and not isinstance(d[key], kind):
            raise _fail(source, f"{key} has the wrong type ({type(d[key]).__name__})")
    _check_model(d.get("arch"), d.get("init_kwargs"), source)
    _check_preprocessing(d.get("preprocessing", {}), source)
    names = d.get("class_names", ["polyp"])
    if not 1 <= len(names) <= 64 or not all(
        isinstance(n, str) and len(n) <= MAX_STRING for n in names
    ):
        raise _fail(source, "class_names must be 1 to 64 short strings")
    if d.get("labels", "binary") not in SCHEMES:
        raise _fail(source, f"labels = {d['labels']!r} (one of {', '.join(SCHEMES)})")
    if not 0.0 <= float(d.get("threshold", 0.5)) <= 1.0:
        raise _fail(source, f"threshold = {d['threshold']} (between 0 and 1)")
    packaged = d.get("packaged", [])
    if len(packaged) > 16 or not all(isinstance(p, str) for p in packaged):
        raise _fail(source, "packaged must list submodule names")
    for name, digests in d.get("trained_on", {}).items():
        if not isinstance(digests, list) or not all(isinstance(x, str) for x in digests):
            raise _fail(source, f"trained_on.{name} must list image digests")


def checked_init_kwargs(
    arch: str, kwargs: dict, source: Path, files: Mapping[str, str | Path] | None = None
) -> dict:
    """``kwargs`` with every file-naming field replaced by what the user gave in ``files``.

    ``encoder_weights`` is dropped (the weight file holds the trained encoder; a packaged
    encoder comes from the installed ImageNet weights). A ``sam_checkpoint`` a checkpoint names
    is refused unless ``files`` gives one: colonseg opens only files its user named.
    """
    files = dict(files or {})
    out = {}
    for key, value in kwargs.items():
        if key == "members":
            out[key] = [
                {
                    **m,
                    "init_kwargs": checked_init_kwargs(
                        m["arch"], m.get("init_kwargs", {}), source, files
                    ),
                }
                for m in value
            ]
        elif key == "encoder_weights":
            continue
        elif key == "sam_checkpoint":
            given = files.get(key)
            if value is not None and given is None:
                raise _fail(
                    source,
                    f"names a file (sam_checkpoint: {str(value)[:120]}); colonseg opens only "
                    "files you name: pass it with --sam-checkpoint",
                )
            out[key] = None if given is None else str(given)
        else:
            out[key] = value
    if arch == "automedsam" and files.get("sam_checkpoint") is not None:
        out["sam_checkpoint"] = str(files["sam_checkpoint"])
    return out
