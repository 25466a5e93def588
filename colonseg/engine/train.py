"""``run_train(cfg)``: one function from a validated config to a run dir with a usable model, for
every method (the method is looked up in ``METHODS`` by ``cfg.method``).

Run dir layout (``<out_dir>/<name>/``): ``config.yaml`` (resolved), ``checkpoints/last.ckpt``
(resume), ``logs/`` (CSV + TensorBoard), ``curves.png``, ``metrics.json``, ``model/`` (the
self-describing checkpoint that ``predict``/``evaluate`` take) and, when the method has test
sets, ``test/`` (``evaluate``'s files). A method with several rounds (MSSG's self-training)
keeps each round in ``round_<r>/`` and copies the last one's model to ``model/``.
"""

from __future__ import annotations

import csv
import json
import shutil
import sys
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities.rank_zero import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from colonseg.config import flatten, save_config
from colonseg.data.io import image_digest, write_atomic
from colonseg.engine.checkpoint import (
    ModelMeta,
    load_pretrained,
    merge_trained_on,
    save_pretrained,
)
from colonseg.engine.checkpoint_schema import PATH_KEYS
from colonseg.engine.evaluate import run_evaluate
from colonseg.engine.predict import Predictor
from colonseg.engine.trainer import EpochTimer, check_resumable, create_trainer, saved_net
from colonseg.errors import ColonsegError
from colonseg.methods import METHODS
from colonseg.methods.base import Method, Stage
from colonseg.viz.curves import epoch_table, plot_curves

__all__ = ["evaluate_command", "run_train"]


def named_files(cfg: DictConfig) -> dict[str, str]:
    """The files a run's config names for its model (``model.sam_checkpoint``): loading the
    run's own checkpoint may open them, as the user named them (see ``load_pretrained``)."""
    return {k: str(cfg.model[k]) for k in PATH_KEYS if cfg.model.get(k)}


def _init_from(net: torch.nn.Module, source: str, arch: str, files: dict | None = None) -> dict:
    """Copy a trained checkpoint of the same architecture into ``net``; return its provenance.

    Tensors whose shapes differ or that the checkpoint lacks (only output heads: a binary model
    initialising a 3-class one, whose PraNet adds class heads) keep their fresh initialisation
    and are listed under ``reinitialised``.
    """
    trained, meta = load_pretrained(source, files=files)
    if meta.arch != arch:
        raise ColonsegError(f"{source}: a {meta.arch} checkpoint cannot initialise {arch}")
    own, theirs = net.state_dict(), trained.state_dict()
    if not theirs.keys() <= own.keys():
        raise ColonsegError(f"{source}: its weights do not fit the configured {arch}")
    fresh = [k for k in own if k not in theirs or own[k].shape != theirs[k].shape]
    if len(fresh) > 0.1 * len(own):  # more than heads differ: another encoder or width
        raise ColonsegError(
            f"{source}: {len(fresh)} of {len(own)} tensors differ in shape from the configured "
            f"{arch} (e.g. {fresh[0]}); only output heads may differ"
        )
    net.load_state_dict({k: (own[k] if k in fresh else theirs[k]) for k in own})
    return {"path": source, "provenance": meta.provenance, "reinitialised": fresh,
            "trained_on": meta.trained_on}  # fmt: skip


def _encoder_tensors(state: dict) -> dict:
    """An architecture's encoder tensors keyed without their wrapper (``encoder.model.`` in smp's
    models, ``encoder.body.`` in colonseg's own), so that any two architectures can swap them."""
    return {k.split(".", 2)[2]: v for k, v in state.items()
            if k.startswith("encoder.") and k.count(".") >= 2}  # fmt: skip


def _init_encoder_from(net: torch.nn.Module, source: str, files: dict | None = None) -> dict:
    """Copy only the encoder of a trained checkpoint (of any architecture) into ``net``; the
    rest keeps its fresh initialisation. Refuses unless every encoder tensor matches by name and
    shape."""
    trained, meta = load_pretrained(source, files=files)
    own, theirs = _encoder_tensors(net.state_dict()), _encoder_tensors(trained.state_dict())
    if not own:
        raise ColonsegError(f"{source}: the configured model has no encoder to initialise")
    misfits = [k for k in own if k not in theirs or own[k].shape != theirs[k].shape]
    if misfits or len(theirs) != len(own):
        raise ColonsegError(
            f"{source}: its encoder ({meta.arch}, {len(theirs)} tensors) does not fit the "
            f"configured one ({len(own)} tensors, e.g. {(misfits or list(own))[0]} differs)"
        )
    state = net.state_dict()
    net.load_state_dict({k: theirs.get(k.split(".", 2)[-1], v) if k.startswith("encoder.") else v
                         for k, v in state.items()})  # fmt: skip
    return {"path": source, "provenance": meta.provenance, "encoder_only": True,
            "trained_on": meta.trained_on}  # fmt: skip


def _log_rows(path: Path, upto_epoch: int | None = None) -> list[dict]:
    """The rows of a Lightning ``metrics.csv`` (those of epochs ``<= upto_epoch``)."""
    if not path.is_file():
        return []
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    return [r for r in rows if upto_epoch is None or int(float(r["epoch"])) <= upto_epoch]


def _write_log_rows(path: Path, rows: list[dict]) -> None:
    keys = sorted({k for r in rows for k in r}, key=lambda k: (k not in ("epoch", "step"), k))

    def write(tmp: Path) -> None:
        with tmp.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=keys)
            writer.writeheader()
            writer.writerows(rows)

    write_atomic(path, write)


class _ModelCopies(Callback):
    """``model/`` whenever ``monitor`` improves, and ``checkpoints/epoch_NNN/`` every ``every``
    epochs: usable checkpoints while training runs (rank 0; the best score survives a resume)."""

    def __init__(self, out: Path, meta: ModelMeta, monitor: str | None, every: int) -> None:
        self.out, self.meta, self.monitor, self.every = out, meta, monitor, every
        self.best = float("-inf")

    def state_dict(self) -> dict:
        return {"best": self.best}

    def load_state_dict(self, state: dict) -> None:
        self.best = state["best"]

    def on_train_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if not trainer.is_global_zero or trainer.sanity_checking:
            return
        epoch = trainer.current_epoch + 1
        if self.monitor and self.monitor in trainer.callback_metrics:
            score = float(trainer.callback_metrics[self.monitor])
            if score > self.best:
                self.best = score
                self.meta.metrics = {self.monitor: score, "best_epoch": epoch}
                save_pretrained(saved_net(trainer, module), self.meta, self.out / "model")
        if self.every and epoch % self.every == 0:
            copy = self.out / "checkpoints" / f"epoch_{epoch:03d}"
            save_pretrained(saved_net(trainer, module), self.meta, copy)


def evaluate_command(model_dir: Path, cfg: DictConfig, method: Method) -> str:
    """The ``colonseg evaluate`` command for a new model on the method's test sets."""
    sources = method.test_sources(cfg) or [
        s for s in (cfg.data.get("val") or []) if isinstance(s, DictConfig)
    ]
    data = " ".join(
        f"--data {s.path}" + (f" --split {s.split}" if s.split else "") for s in sources
    )
    model = method.evaluate_model(cfg, model_dir)
    return f"colonseg evaluate {model} {data or '--data DATASET'} --out eval/{cfg.name}"


def _evaluate(cfg: DictConfig, method: Method, model_dir: Path, out: Path) -> dict:
    """``evaluate`` on the method's test sets that exist here, then the method's extras."""
    sources = [s for s in method.test_sources(cfg) if Path(s.path).is_dir()]
    if not sources:
        return {"summary": {}}
    predictor = Predictor.from_pretrained(
        model_dir, files=named_files(cfg), **method.predictor_options(cfg)
    )
    title = f"{cfg.method}: {model_dir}"
    summary = run_evaluate(predictor, sources, out, progress=False, title=title)
    extra = method.evaluate_extra(cfg, predictor, summary, out)
    text = json.dumps(summary, indent=2)
    write_atomic(out / "summary.json", lambda tmp: tmp.write_text(text))
    return {"summary": summary, **extra}


def _fit_stage(
    cfg: DictConfig, method: Method, stage: Stage, resume: bool, callbacks: list, command: str
) -> tuple[Path | None, dict, list[float]]:
    """One training into ``stage.out``; returns the model folder (None on ranks > 0), the
    final metrics and the seconds of each epoch."""
    out, last = stage.out, stage.out / "checkpoints" / "last.ckpt"
    kept_log = []
    if resume:  # Lightning's CSV logger starts metrics.csv afresh: keep the finished epochs' rows
        kept_log = _log_rows(out / "logs" / "metrics.csv", upto_epoch=check_resumable(last))
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    dm = method.datamodule(cfg, stage)
    if rank_zero_only.rank == 0:
        dm.prepare_data()  # caches are complete before any other DDP process starts
    dm.setup("fit")
    module = method.module(cfg, dm)
    record = method.checkpoint(cfg, dm)
    trained_on = {name: sorted({image_digest(f) for f in files})
                  for name, files in method.training_images(cfg, dm).items()}  # fmt: skip
    parent = None
    if cfg.model.get("init_from") and cfg.model.get("init_encoder_from"):
        raise ColonsegError("model.init_from and model.init_encoder_from: choose one")
    if cfg.model.get("init_from"):
        parent = _init_from(module.net, cfg.model.init_from, record["arch"], named_files(cfg))
    elif cfg.model.get("init_encoder_from"):
        parent = _init_encoder_from(module.net, cfg.model.init_encoder_from, named_files(cfg))
    if parent is not None:
        trained_on = merge_trained_on(trained_on, parent.pop("trained_on"))
    meta = ModelMeta(
        **{k: v for k, v in record.items() if k != "provenance"},
        threshold=record.get("threshold", cfg.threshold),
        postprocess=record.get("postprocess", cfg.postprocess),
        provenance={
            "config": cfg.name,
            "method": cfg.method,
            **record.get("provenance", {}),
            "init_from": parent,
            "epochs": cfg.trainer.max_epochs,
            "round": stage.number,
            "command": command,
        },
        trained_on=trained_on,
    )
    copies = _ModelCopies(out, meta, cfg.trainer.monitor, cfg.trainer.checkpoint_every)
    trainer = create_trainer(cfg, out, [copies, *method.callbacks(cfg, dm, out), *callbacks])
    trainer.fit(module, datamodule=dm, ckpt_path=str(last) if resume else None, weights_only=True)
    timer = next(c for c in trainer.callbacks if isinstance(c, EpochTimer))
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
    if not trainer.is_global_zero:
        return None, metrics, timer.seconds
    csv_path = out / "logs" / "metrics.csv"
    if kept_log and csv_path.is_file():
        _write_log_rows(csv_path, kept_log + _log_rows(csv_path))
    if csv_path.is_file():
        plot_curves(csv_path, out / "curves.png", method.curve_panels)
        metrics["history"] = epoch_table(csv_path)
    if copies.best == float("-inf"):  # no monitored epoch saved model/: the last one is it
        meta.metrics = {k: v for k, v in metrics.items() if k.startswith("val/")}
        save_pretrained(module.net, meta, out / "model")
    return out / "model", metrics, timer.seconds


#: Keys that may change between a run and its resumption: where and how it runs, not what it is.
_RESUMABLE_CHANGES = ("test.", "trainer.progress_bar", "trainer.logger", "trainer.accelerator",
                      "trainer.devices", "trainer.strategy", "trainer.checkpoint_minutes",
                      "data.num_workers")  # fmt: skip


def _check_same_config(cfg: DictConfig, saved: Path) -> None:
    """Refuse, in one line, to resume a run with a config other than the one it started with."""
    if not saved.is_file():
        return  # check_resumable names the missing run
    before = flatten(OmegaConf.to_container(OmegaConf.load(saved), resolve=True))
    after = flatten(OmegaConf.to_container(cfg, resolve=True))
    keys = sorted(set(before) | set(after))
    changed = [
        k for k in keys if before.get(k) != after.get(k) and not k.startswith(_RESUMABLE_CHANGES)
    ]
    if changed:
        shown = ", ".join(f"{k}: {before.get(k)!r} → {after.get(k)!r}" for k in changed[:3])
        more = f" and {len(changed) - 3} more" if len(changed) > 3 else ""
        raise ColonsegError(
            f"{saved}: the run was started with another config ({shown}{more}); resume with its "
            "own config, or pass --allow-changed"
        )


def run_train(
    cfg: DictConfig,
    resume: bool = False,
    synthetic: bool = False,
    callbacks: list | None = None,
    command: str | None = None,
    allow_changed: bool = False,
) -> dict:
    """Train the model the config describes (or with ``test.only`` evaluate one); return
    ``{"run_dir", "model_dir", "metrics", "summary", "epoch_seconds", "evaluate_command"}``
    (plus a method's extra evaluation, e.g. ``baselines``).

    ``callbacks`` are extra Lightning callbacks; ``synthetic`` trains on generated data written
    into the run dir; ``command`` is the command line recorded in the checkpoint (default: this
    process's own). ``resume`` refuses a config that differs from the run's own ``config.yaml``
    (but in where and how it runs) unless ``allow_changed``.
    """
    method: Method = METHODS.get(cfg.method)()
    run_dir = Path(cfg.out_dir) / cfg.name
    if synthetic:
        cfg = method.synthetic(cfg, run_dir / "synthetic_data")
    if cfg.test.only:
        model_dir = Path(cfg.test.checkpoint or run_dir / "model")
        return {"run_dir": run_dir, "model_dir": model_dir,
                **_evaluate(cfg, method, model_dir, run_dir / "test")}  # fmt: skip
    command = command or " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])
    if resume and not allow_changed:
        _check_same_config(cfg, run_dir / "config.yaml")
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(cfg, run_dir / "config.yaml")
    rounds, model_dir, seconds = method.rounds(cfg), None, []
    for r in range(1, rounds + 1):
        out = run_dir if rounds == 1 else run_dir / f"round_{r}"
        if r < rounds and (out / "model" / "config.json").is_file():
            model_dir = out / "model"  # an earlier round of a resumed run
            continue
        previous = (
            Predictor.from_pretrained(model_dir, files=named_files(cfg)) if model_dir else None
        )
        last = out / "checkpoints" / "last.ckpt"
        stage = Stage(out, r, previous, open_model=Predictor.from_pretrained)
        model_dir, metrics, took = _fit_stage(
            cfg,
            method,
            stage,
            resume and (rounds == 1 or last.is_file()),
            list(callbacks or []),
            command,
        )
        seconds += took
        if model_dir is None:  # a DDP process other than rank 0: rank 0 writes and evaluates
            return {"run_dir": run_dir, "model_dir": None, "metrics": metrics}
    if rounds > 1:
        shutil.copytree(model_dir, run_dir / "model", dirs_exist_ok=True)
        model_dir = run_dir / "model"
    text = json.dumps(metrics, indent=2)
    write_atomic(run_dir / "metrics.json", lambda tmp: tmp.write_text(text))
    result = {"summary": {}}
    if cfg.test.after_training:
        result = _evaluate(cfg, method, model_dir, run_dir / "test")
    return {
        "run_dir": run_dir,
        "model_dir": model_dir,
        "metrics": metrics,
        "epoch_seconds": seconds,
        "evaluate_command": evaluate_command(model_dir, cfg, method),
        **result,
    }
