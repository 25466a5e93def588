import json

import pytest
import torch

from colonseg.engine.checkpoint import load_pretrained
from colonseg.engine.config import load_config
from colonseg.engine.train import run_train
from colonseg.methods.medsam_box.method import MedsamBox
from colonseg.models.medsam import build_sam


@pytest.mark.parametrize(
    "prompt",
    [["model.sparse=box", "loss.box=1"],
     ["model.sparse=region", "loss.box=0", "data.flip=true", "optim.schedule=onecycle"]],
    ids=["box", "region"],
)  # fmt: skip
def test_two_step_training_on_synthetic_data(tmp_path, prompt):
    cfg = load_config(
        "medsam_box/polyp",
        [f"out_dir={tmp_path}", "name=run", "trainer.max_epochs=1", "trainer.limit_train_batches=2",
         "trainer.checkpoint_every=1", "trainer.accelerator=cpu", "trainer.precision=32-true",
         *prompt],
    )  # fmt: skip
    cfg = MedsamBox().synthetic(cfg, tmp_path / "data", n=4)
    cfg.data.batch_size = 1
    result = run_train(cfg)
    run = tmp_path / "run"
    for name in ("model/config.json", "checkpoints/epoch_001/weights.safetensors",
                 "training_history.json", "loss_curves.png", "snapshots/epoch_001.png",
                 "test/summary.json", "test/baselines.json"):  # fmt: skip
        assert (run / name).is_file(), name
    history = json.loads((run / "training_history.json").read_text())
    assert history[0]["epoch"] == 1 and "train/loss" in history[0] and "val/box_iou" in history[0]
    # the frozen SAM is untouched, the prompt module trained, and only the prompt module is stored
    net, meta = load_pretrained(run / "model")
    fresh = build_sam("litemedsam")
    key = "mask_decoder.output_upscaling.0.weight"
    assert torch.equal(net.sam.state_dict()[key], fresh.state_dict()[key])
    assert meta.arch == "automedsam" and meta.packaged == ["sam"]
    from safetensors.torch import load_file

    stored = load_file(str(run / "model" / "weights.safetensors"))
    assert stored and all(k.startswith("prompt.") for k in stored)
    # the box-prompted upper bound sees the discs (the box scaling is right)
    (base,) = result["baselines"].values()
    assert base["box_prompt"]["dice"] > 0.85
    assert 0.5 < base["box_as_mask"]["dice"] < 0.95
