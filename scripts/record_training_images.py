"""Record in a shipped model's ``config.json`` which images it was trained on (``trained_on``),
for models trained before checkpoints recorded it themselves; ``colonseg evaluate`` then warns
when it scores them.

Run: .venv/bin/python scripts/record_training_images.py MODEL DATASET[:SPLIT] [...], e.g.
``default ../shared/datasets/kvasir-seg:pranet_train ../shared/datasets/cvc-clinicdb:pranet_train``.
A folder of images with no masks (PolypGen's normal frames) counts all its images. The record is
a union: running it again or with more datasets only adds.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from colonseg.data.io import collect_images, image_digest, write_atomic
from colonseg.data.layouts import find_pairs
from colonseg.data.sources import DataSource
from colonseg.engine.checkpoint import ZOO_DIR, merge_trained_on


def images_of(source: DataSource) -> list[Path]:
    try:
        return [p.image for p in find_pairs(source.path, source.layout, source.split)]
    except Exception:  # noqa: BLE001 - an image-only folder has no layout with masks
        if source.split:
            raise
        return collect_images([source.path])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model", help="a zoo name (colonseg/weights/<name>) or checkpoint folder")
    parser.add_argument("data", nargs="+", help="DATASET[:SPLIT]")
    args = parser.parse_args()
    folder = ZOO_DIR / args.model if (ZOO_DIR / args.model).is_dir() else Path(args.model)
    config = json.loads((folder / "config.json").read_text())
    record = {}
    for item in args.data:
        path, _, split = item.partition(":")
        source = DataSource(path, split or None)
        files = images_of(source)
        name = source.display_name()
        if name == "images":  # an image-only folder inside a dataset: name the dataset
            name = Path(path).resolve().parent.name
        record[name] = sorted({image_digest(f) for f in files})
        print(f"{name}: {len(files)} images")
    config["trained_on"] = merge_trained_on(config.get("trained_on", {}), record)
    text = json.dumps(config, indent=2)
    write_atomic(folder / "config.json", lambda tmp: tmp.write_text(text))
    counts = ", ".join(f"{k} ({len(v)})" for k, v in config["trained_on"].items())
    print(f"{folder / 'config.json'}: trained on {counts}")


if __name__ == "__main__":
    main()
