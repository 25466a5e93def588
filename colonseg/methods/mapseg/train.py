"""``run_mapseg(cfg)``: train MAPSeg on normal frames, save a checkpoint, evaluate it.

The config has MAPSeg's upper-case sections (``DATASET``, ``SIMPO``, ``MEMORY``, ``MODEL``,
``TRAIN``, ``TEST``) and takes MAPSeg-style dotlist overrides (``DATASET.target=polyp``,
``TEST.only=True``). ``colonseg train`` dispatches here when a config says ``METHOD: mapseg``.

The checkpoint (``<RESULT_DIR>/<EXP_NAME>/model``) is an ordinary colonseg checkpoint of the
``mapseg`` architecture whose default post-processing is MAPSeg's demo — plain Otsu threshold,
5×5 closing, hole filling, largest region — inside the field of view; ``predict``, ``evaluate``
and the app take it like any other model. Plain Otsu always finds a region, also in a normal
frame: to screen frames, use ``--postprocess fov,otsu,close=5,fill_holes,keep_largest`` (Otsu
never below 0.2), whose false-positive area on normal frames is reported as ``fp_area_screen``.
"""

from __future__ import annotations

import csv
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader

from colonseg.config import merge_config, save_config
from colonseg.data.io import read_image, write_atomic
from colonseg.data.layouts import hold_out
from colonseg.data.sources import DataSource
from colonseg.engine.checkpoint import ModelMeta, save_pretrained
from colonseg.engine.evaluate import run_evaluate
from colonseg.engine.predict import Predictor
from colonseg.engine.train import trainer_precision
from colonseg.engine.tta import tta_mode
from colonseg.errors import ColonsegError
from colonseg.methods.mapseg.data import NormalFrames, normal_frame_files
from colonseg.methods.mapseg.module import MapsegModule
from colonseg.methods.mapseg.simpo import Simpo, image_files, load_shapes, load_textures
from colonseg.metrics import AUROCMeter
from colonseg.models.encoders import encoder_normalization
from colonseg.models.mapseg import MemSegNet
from colonseg.postprocess import PostProcess
from colonseg.viz.curves import plot_curves

__all__ = [
    "MapsegConfig",
    "load_mapseg_config",
    "memory_picks",
    "run_mapseg",
    "split_normal_frames",
]

DEMO_POSTPROCESS = "fov,otsu=0,close=5,fill_holes,keep_largest"  # MAPSeg's demo, in the view
SCREEN_POSTPROCESS = "fov,otsu,close=5,fill_holes,keep_largest"  # Otsu floored at 0.2


@dataclass
class DatasetSection:
    data_dir: str = "../shared/datasets"
    target: str = "polyp"
    normal: str | None = "polypgen-normal/images"
    textures: str | None = "textures-dtd"
    shapes: str | None = None
    resize: int = 256
    val_fraction: float = 0.1
    split_seed: int | None = None  # the held-out frames and their lesions; None: TRAIN.seed
    augment: str = "mapseg"


@dataclass
class SimpoSection:
    p: float = 0.5
    fills: list[str] = field(default_factory=lambda: ["colon", "texture"])
    lobes: float = 0.0
    relief: float = 0.0


@dataclass
class MemorySection:
    enabled: bool = True
    nb_memory_sample: int = 30
    match: str = "frame"  # frame: MemSeg's nearest frame, position by position; patch: any region


@dataclass
class ModelSection:
    encoder: str = "tf_efficientnet_lite0"
    width: int = 64
    pretrained: bool = True
    encoder_weights: str | None = None


@dataclass
class TrainSection:
    batch_size: int = 8
    epochs: int = 12
    lr: float = 3e-3
    weight_decay: float = 5e-4
    focal_weight: float = 0.4
    l1_weight: float = 0.6
    focal_gamma: float = 4.0
    seed: int = 0
    num_workers: int = 0
    accelerator: str = "auto"
    devices: Any = "auto"
    strategy: str = "auto"
    precision: str = "auto"
    limit_train_batches: float = 1.0
    limit_val_batches: float = 1.0


@dataclass
class TestSection:
    only: bool = False
    tta: str = "d4"  # the checkpoint's default test-time augmentation: none, flip or d4
    checkpoint: str | None = None
    datasets: list[dict] = field(default_factory=list)


@dataclass
class MapsegConfig:
    METHOD: str = "mapseg"
    EXP_NAME: str = "mapseg_polyp"
    RESULT_DIR: str = "runs"
    DATASET: DatasetSection = field(default_factory=DatasetSection)
    SIMPO: SimpoSection = field(default_factory=SimpoSection)
    MEMORY: MemorySection = field(default_factory=MemorySection)
    MODEL: ModelSection = field(default_factory=ModelSection)
    TRAIN: TrainSection = field(default_factory=TrainSection)
    TEST: TestSection = field(default_factory=TestSection)


def load_mapseg_config(config: str | Path, overrides: list[str] = ()) -> DictConfig:
    """Load a MAPSeg YAML onto the schema and apply ``KEY.sub=value`` overrides."""
    return merge_config(MapsegConfig, config, overrides, "MAPSeg config")


def _mvtec_root(cfg: DictConfig) -> Path | None:
    """``<data_dir>/<target>`` when it is in MAPSeg's MVTec-style layout with a test set."""
    root = Path(cfg.DATASET.data_dir) / cfg.DATASET.target
    return root if (root / "test").is_dir() and (root / "ground_truth").is_dir() else None


def _sources(cfg: DictConfig) -> list[DataSource]:
    """The TEST datasets, and the target's own ``test/`` set when it is MVTec-style."""
    root = Path(cfg.DATASET.data_dir)
    sources = [
        DataSource(str(root / d["path"]), d.get("split"), d.get("layout", "auto"))
        for d in cfg.TEST.datasets
    ]
    mvtec = _mvtec_root(cfg)
    return sources + ([DataSource(str(mvtec), layout="mvtec")] if mvtec else [])


def simpo_from_config(cfg: DictConfig) -> Simpo:
    """The config's SIMPO synthesiser, with its texture and shape folders loaded."""
    d = cfg.DATASET
    return Simpo(
        textures=load_textures(Path(d.data_dir) / d.textures) if d.textures else [],
        shapes=load_shapes(Path(d.data_dir) / d.shapes) if d.shapes else [],
        fills=tuple(cfg.SIMPO.fills),
        p=cfg.SIMPO.p,
        lobes=cfg.SIMPO.lobes,
        relief=cfg.SIMPO.relief,
    )


def split_seed(cfg: DictConfig) -> int:
    """The seed of the held-out frames and of their validation lesions: ``DATASET.split_seed``,
    else ``TRAIN.seed`` (runs that differ only in ``TRAIN.seed`` can share one validation set)."""
    d = cfg.DATASET
    return cfg.TRAIN.seed if d.split_seed is None else d.split_seed


def split_normal_frames(cfg: DictConfig) -> tuple[list[Path], list[Path]]:
    """The normal frames to train on, and those held out (``DATASET.val_fraction``)."""
    d = cfg.DATASET
    files = normal_frame_files(d.data_dir, d.target, d.normal)
    return hold_out(files, d.val_fraction, split_seed(cfg))


def memory_picks(cfg: DictConfig, n_train: int) -> np.ndarray:
    """Which of the ``n_train`` training frames fill the memory (seeded by ``TRAIN.seed``)."""
    rng = np.random.default_rng(cfg.TRAIN.seed)
    return rng.choice(n_train, cfg.MEMORY.nb_memory_sample, replace=False)


def _held_out_normal(cfg: DictConfig) -> list[Path]:
    """Normal frames never trained on: the target's ``test/good`` (MVTec-style), else the
    held-out share of the normal folder; empty when there are none."""
    mvtec = _mvtec_root(cfg)
    if mvtec and (mvtec / "test" / "good").is_dir():
        return image_files(mvtec / "test" / "good")
    try:
        return split_normal_frames(cfg)[1]
    except ColonsegError:
        return []


def _frame_scores(
    predictor: Predictor, files: list[Path], screen: PostProcess
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per frame, from one prediction: the image-level anomaly score (highest lesion
    probability, as ``evaluate``'s per-case ``peak``), the predicted area fraction after the
    default post-processing, and after ``screen`` (another post-processing)."""
    scores, areas, screened = [], [], []
    for f in files:
        image = read_image(f)
        out = predictor.predict(image)
        scores.append(float(out.prob.max()))
        areas.append(float(out.mask.mean()))
        prob = screen.restrict(out.prob[None], image)[0]
        raw = (prob >= predictor.threshold).astype(np.uint8)
        screened.append(float(screen(prob, raw)[0].mean()))
    return np.array(scores), np.array(areas), np.array(screened)


def _image_auroc(polyp: np.ndarray, normal: np.ndarray) -> float:
    meter = AUROCMeter()
    meter.update(np.concatenate([polyp, normal]), np.arange(len(polyp) + len(normal)) < len(polyp))
    return meter.compute()


def _evaluate(cfg: DictConfig, model_dir: Path, out: Path) -> dict:
    """``evaluate``'s summary on the TEST datasets (and an MVTec-style target's test set), plus
    ``image_auroc`` (their frames against the held-out normal frames) and a ``normal:held-out``
    entry: the false-positive area and the share of frames with any (in-distribution) on the
    held-out normal frames, after the default post-processing and after the screening one."""
    sources = [s for s in _sources(cfg) if Path(s.path).is_dir()]
    if not sources:
        return {}
    predictor = Predictor.from_pretrained(model_dir, tta=cfg.TEST.tta)
    summary = run_evaluate(predictor, sources, out, progress=False, title=f"MAPSeg: {model_dir}")
    held_out = _held_out_normal(cfg)
    if not held_out:
        return summary
    screen = PostProcess.parse(SCREEN_POSTPROCESS)
    normal, areas, screened = _frame_scores(predictor, held_out, screen)
    normal = normal.round(6)  # as the test frames' peaks in per_case.csv: no false ties/order
    with open(out / "per_case.csv", newline="") as f:
        peaks = [(row["dataset"], float(row["peak"])) for row in csv.DictReader(f)]
    for name in summary:
        polyp = np.array([peak for dataset, peak in peaks if dataset == name])
        summary[name]["image_auroc"] = _image_auroc(polyp, normal)
    summary["normal:held-out"] = {
        "n": len(held_out),
        "fp_area": float(np.mean(areas)),
        "fp_frames": float(np.mean(areas > 0)),
        "fp_area_screen": float(np.mean(screened)),
        "fp_frames_screen": float(np.mean(screened > 0)),
    }
    write_atomic(out / "summary.json", lambda tmp: tmp.write_text(json.dumps(summary, indent=2)))
    return summary


def run_mapseg(cfg: DictConfig, command: str | None = None) -> dict:
    """Train (or with ``TEST.only`` evaluate) MAPSeg; return ``{"run_dir", "model_dir", ...}``."""
    run_dir = Path(cfg.RESULT_DIR) / cfg.EXP_NAME
    tta_mode(cfg.TEST.tta)  # a misspelt mode fails now, not after training
    if cfg.TEST.only:
        model_dir = Path(cfg.TEST.checkpoint or run_dir / "model")
        return {"model_dir": model_dir, "summary": _evaluate(cfg, model_dir, run_dir / "test")}
    L.seed_everything(cfg.TRAIN.seed, workers=True, verbose=False)
    d, size = cfg.DATASET, cfg.DATASET.resize
    train_files, val_files = split_normal_frames(cfg)
    simpo = simpo_from_config(cfg)
    mean, std = encoder_normalization(cfg.MODEL.encoder)
    train_set = NormalFrames(train_files, size, simpo, mean, std, augment=d.augment)
    val_set = NormalFrames(val_files, size, simpo, mean, std, force=True, seed=split_seed(cfg))
    memory = cfg.MEMORY.enabled
    init_kwargs = {
        "encoder": cfg.MODEL.encoder,
        "classes": 1,
        "size": size,
        "memory_size": cfg.MEMORY.nb_memory_sample,
        "memory": memory,
        "memory_match": cfg.MEMORY.match,
        "width": cfg.MODEL.width,
    }
    net = MemSegNet(
        pretrained=cfg.MODEL.pretrained, encoder_weights=cfg.MODEL.encoder_weights, **init_kwargs
    )
    module = MapsegModule(
        net,
        train_set.images[memory_picks(cfg, len(train_set))] if memory else None,
        lr=cfg.TRAIN.lr,
        weight_decay=cfg.TRAIN.weight_decay,
        focal_weight=cfg.TRAIN.focal_weight,
        l1_weight=cfg.TRAIN.l1_weight,
        gamma=cfg.TRAIN.focal_gamma,
    )
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(cfg, run_dir / "config.yaml")
    t = cfg.TRAIN
    trainer = L.Trainer(
        max_epochs=t.epochs,
        accelerator=t.accelerator,
        devices=t.devices,
        strategy=t.strategy,
        precision=trainer_precision(t.precision, t.accelerator),
        limit_train_batches=t.limit_train_batches,
        limit_val_batches=t.limit_val_batches,
        logger=CSVLogger(run_dir, name="logs", version=""),
        callbacks=[ModelCheckpoint(run_dir / "checkpoints", "last", save_top_k=1)],
        enable_progress_bar=sys.stderr.isatty(),
        enable_model_summary=False,
        log_every_n_steps=10,
        default_root_dir=run_dir,
    )
    loader = DataLoader(train_set, t.batch_size, shuffle=True, drop_last=True,
                        num_workers=t.num_workers)  # fmt: skip
    trainer.fit(module, loader, DataLoader(val_set, t.batch_size, num_workers=t.num_workers))
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
    if (run_dir / "logs" / "metrics.csv").is_file():
        plot_curves(run_dir / "logs" / "metrics.csv", run_dir / "curves.png")
    meta = ModelMeta(
        arch="mapseg",
        init_kwargs=init_kwargs,
        size=(size, size),
        mean=mean,
        std=std,
        postprocess=DEMO_POSTPROCESS,
        tta=tta_mode(cfg.TEST.tta),
        # the frozen offline ImageNet encoder comes from its package, not from the file
        packaged=["encoder"] if cfg.MODEL.pretrained and not cfg.MODEL.encoder_weights else [],
        provenance={
            "config": cfg.EXP_NAME,
            "method": "mapseg (normal frames + SIMPO; no polyp label used)",
            "train": {"normal_frames": len(train_files), "source": str(train_files[0].parent)},
            "simpo": OmegaConf.to_container(cfg.SIMPO),
            "epochs": t.epochs,
            "command": command or " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        },
        metrics={k: v for k, v in metrics.items() if k.startswith("val/")},
    )
    model_dir = save_pretrained(module.net, meta, run_dir / "model")
    write_atomic(run_dir / "metrics.json", lambda tmp: tmp.write_text(json.dumps(metrics)))
    summary = _evaluate(cfg, model_dir, run_dir / "test")
    return {"run_dir": run_dir, "model_dir": model_dir, "metrics": metrics, "summary": summary}
