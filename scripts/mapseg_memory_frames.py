"""Rebuild a MAPSeg checkpoint of the older format (memory features stored) in the current one.

Checkpoints now store the memory's normal frames and recompute their features on load; older
files stored the features and are refused. If you still have the normal frames a run trained
on, this re-reads the memory frames that run picked (same config, same ``seed`` and split),
checks that the features recomputed from them equal the stored ones, and writes the checkpoint
anew with every tensor in its stored dtype. That is how the two runs of the shipped
``mapseg_polyp`` were carried over.

Run: .venv/bin/python scripts/mapseg_memory_frames.py OLD_MODEL_DIR OUT_DIR [KEY.sub=value ...]
(the overrides the run was trained with, e.g. ``seed=1 data.split_seed=0``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from colonseg.engine.checkpoint import ModelMeta, save_pretrained
from colonseg.engine.config import load_config
from colonseg.errors import ColonsegError
from colonseg.methods.mapseg.data import load_frames, memory_picks, split_normal_frames
from colonseg.models import create_model
from colonseg.models.state_dict import read_state_dict

CONFIG = Path(__file__).resolve().parents[1] / "colonseg" / "configs" / "mapseg" / "polyp.yaml"
TOLERANCE = 0.05  # fp16 rounding of features up to ~60 is 0.016 at most


def rebuild(old: Path, out: Path, config: str, overrides: list[str]) -> None:
    cfg = load_config(config, overrides)
    meta = ModelMeta.from_json(json.loads((old / "config.json").read_text()), old / "config.json")
    if meta.arch != "mapseg":
        raise ColonsegError(f"{old}: a {meta.arch} checkpoint, not mapseg")
    state = read_state_dict(old / "weights.safetensors")
    features = {k: state.pop(k) for k in list(state) if k.startswith("memory.level")}
    if not features:
        raise ColonsegError(f"{old}: stores no memory features (already the current format?)")
    dtypes = {k: v.dtype for k, v in state.items()}
    net = create_model(meta.arch, **{**meta.init_kwargs, "pretrained": bool(meta.packaged)})
    reference = net.state_dict()
    net.load_state_dict({k: v.to(reference[k].dtype) for k, v in state.items()}, strict=False)
    train_files, _ = split_normal_frames(cfg)
    picks = memory_picks(cfg, len(train_files))
    net.fill_memory(load_frames([train_files[i] for i in picks], cfg.data.image_size))
    for i, recomputed in enumerate(net.memory.items()):
        stored = features[f"memory.level{i}"].float()
        gap = (recomputed - stored).abs().max().item()
        print(f"memory level {i}: largest |recomputed - stored| = {gap:.2e}")
        if gap > TOLERANCE:
            raise ColonsegError(
                f"{old}: memory level {i} differs from the frames this config picks by {gap:.3f}; "
                "pass the overrides the run was trained with"
            )
    save_pretrained(net, meta, out, dtypes=dtypes)
    print(f"{old} → {out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("old", type=Path, help="checkpoint folder of the older format")
    parser.add_argument("out", type=Path, help="folder to write the rebuilt checkpoint to")
    parser.add_argument("--config", default=str(CONFIG), help="the MAPSeg config it trained with")
    parser.add_argument("overrides", nargs="*", help="its overrides, KEY.sub=value")
    args = parser.parse_args()
    try:
        rebuild(args.old, args.out, args.config, args.overrides)
    except ColonsegError as exc:
        raise SystemExit(f"error: {exc}") from None


if __name__ == "__main__":
    main()
