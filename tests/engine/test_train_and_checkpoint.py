from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from colonseg.engine.checkpoint import load_pretrained, save_pretrained
from colonseg.engine.train import run_train
from colonseg.errors import ColonsegError
from tests.conftest import random_frames


def test_two_step_training_writes_a_usable_run(tiny_cfg):
    result = run_train(tiny_cfg, command="colonseg train tiny")
    run = result["run_dir"]
    for name in (
        "config.yaml",
        "curves.png",
        "metrics.json",
        "checkpoints/last.ckpt",
        "model/weights.safetensors",
        "model/config.json",
        "logs/metrics.csv",
    ):
        assert (run / name).is_file(), name
    assert 0.0 <= result["metrics"]["val/dice"] <= 1.0
    cfg = json.loads((run / "model" / "config.json").read_text())
    assert cfg["arch"] == "unet" and cfg["preprocessing"]["size"] == [64, 64]
    assert cfg["provenance"]["command"] == "colonseg train tiny"
    assert [len(v) for v in cfg["trained_on"].values()] == [8]  # the 8 training images

    net, meta = load_pretrained(run / "model")
    x = torch.rand(1, 3, 64, 64)
    lightning = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    net2, _ = load_pretrained(run / "model", weights=run / "checkpoints" / "last.ckpt")
    with torch.no_grad():
        torch.testing.assert_close(net(x), net2(x))
    assert lightning["epoch"] == 0 and lightning["global_step"] == 2  # saved as epoch 0 ended


def test_resume_continues_from_last_checkpoint(tiny_cfg):
    run_train(tiny_cfg)
    tiny_cfg.trainer.max_epochs = 2
    with pytest.raises(ColonsegError, match=r"another config \(trainer.max_epochs: 1 → 2\)"):
        run_train(tiny_cfg, resume=True)  # refused in one line: the run started with 1 epoch
    tiny_cfg.trainer.progress_bar = True  # where and how it runs may change
    with pytest.raises(ColonsegError, match="--allow-changed"):
        run_train(tiny_cfg, resume=True)
    result = run_train(tiny_cfg, resume=True, allow_changed=True)
    ckpt = torch.load(result["run_dir"] / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["epoch"] == 1 and ckpt["global_step"] == 4


def test_save_load_roundtrip_identical(tmp_path):
    from colonseg.engine.checkpoint import ModelMeta
    from colonseg.models import create_model

    net = create_model("unet", encoder="test_efficientnet", pretrained=False).eval()
    meta = ModelMeta(arch="unet", init_kwargs={"encoder": "test_efficientnet", "classes": 1})
    save_pretrained(net, meta, tmp_path / "m")
    loaded, meta2 = load_pretrained(tmp_path / "m")
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(net(x), loaded(x))
    assert meta2 == meta


def test_packaged_encoder_is_not_stored_but_restored(tmp_path):
    from safetensors import safe_open

    from colonseg.engine.checkpoint import ModelMeta
    from colonseg.models import create_model

    kw = {"encoder": "tf_efficientnet_lite0", "size": 64, "memory_size": 2, "width": 8}
    net = create_model("mapseg", pretrained=True, **kw).eval()  # offline ImageNet weights
    net.fill_memory(random_frames(2))
    meta = ModelMeta(arch="mapseg", init_kwargs=kw, size=(64, 64), packaged=["encoder"])
    save_pretrained(net, meta, tmp_path / "m")
    with safe_open(str(tmp_path / "m" / "weights.safetensors"), "pt") as f:
        assert f.keys() and not any(k.startswith("encoder.") for k in f.keys())
    loaded, meta2 = load_pretrained(tmp_path / "m")
    assert meta2.packaged == ["encoder"]
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(net(x), loaded(x))


def test_bad_checkpoints_are_refused(tmp_path):
    from colonseg.engine.checkpoint import ModelMeta
    from colonseg.models import create_model

    net = create_model("unet", encoder="test_efficientnet", pretrained=False)
    save_pretrained(net, ModelMeta("unet", {"encoder": "test_efficientnet"}), tmp_path / "m")
    (tmp_path / "m" / "weights.safetensors").write_bytes(b"garbage")
    with pytest.raises(ColonsegError, match="corrupt safetensors"):
        load_pretrained(tmp_path / "m")

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"x": Evil()}, tmp_path / "evil.pth")
    with pytest.raises(ColonsegError, match="refused or unreadable"):
        load_pretrained(tmp_path / "m", weights=tmp_path / "evil.pth")
    with pytest.raises(ColonsegError, match="no such checkpoint"):
        load_pretrained(tmp_path / "nothing")


def test_pranet_recipe_trains_with_deep_supervision_and_scales(tiny_cfg):
    from omegaconf import OmegaConf

    cfg = OmegaConf.merge(
        tiny_cfg,
        OmegaConf.from_dotlist(
            [
                "model.name=pranet",
                "loss.name=structure",
                "loss.deep_supervision=true",
                "loss.deep_supervision_weights=[1,1,1,1]",
                "data.train_scales=[0.75,1.0,1.25]",
                "trainer.gradient_clip_val=0.5",
                "trainer.gradient_clip_algorithm=value",
            ]
        ),
    )
    cfg.model.kwargs = {}  # merging keeps the U-Net's decoder_channels; replace instead
    run_train(cfg)
    cfg.trainer.max_epochs = 2
    result = run_train(cfg, resume=True, allow_changed=True)  # the hyper-parameters load back
    assert result["metrics"]["train/loss_epoch"] > 0
    net, meta = load_pretrained(result["model_dir"])
    assert meta.arch == "pranet" and net(torch.rand(1, 3, 64, 64)).shape == (1, 1, 64, 64)


def test_deep_supervision_needs_auxiliary_outputs(tiny_cfg):
    from omegaconf import OmegaConf

    cfg = OmegaConf.merge(tiny_cfg, OmegaConf.from_dotlist(["loss.deep_supervision=true"]))
    with pytest.raises(ValueError, match="has no auxiliary outputs"):
        run_train(cfg)


def test_every_epoch_leaves_a_resumable_checkpoint(tiny_cfg):
    """A run killed after epoch 1 must still have ``last.ckpt`` from that epoch."""
    import lightning as L

    class Stop(L.Callback):
        def on_train_epoch_start(self, trainer, module):
            if trainer.current_epoch == 1:
                ckpt = torch.load(
                    Path(tiny_cfg.out_dir) / "tiny" / "checkpoints" / "last.ckpt",
                    weights_only=False,
                )
                assert ckpt["epoch"] == 0
                raise SystemExit("killed")

    from omegaconf import OmegaConf

    cfg = OmegaConf.merge(tiny_cfg, OmegaConf.from_dotlist(["trainer.max_epochs=2"]))
    with pytest.raises(SystemExit, match="killed"):
        run_train(cfg, callbacks=[Stop()])


def test_init_from_copies_a_trained_checkpoint(tmp_path):
    from colonseg.engine.checkpoint import ModelMeta
    from colonseg.engine.train import _init_from
    from colonseg.models import create_model

    kwargs = {"encoder": "test_efficientnet", "classes": 1}
    trained = create_model("unet", pretrained=False, **kwargs).eval()
    meta = ModelMeta(arch="unet", init_kwargs=kwargs, provenance={"epochs": 3},
                     trained_on={"a": ["0123456789abcdef"]})  # fmt: skip
    save_pretrained(trained, meta, tmp_path / "m")
    fresh = create_model("unet", pretrained=False, **kwargs).eval()
    parent = _init_from(fresh, str(tmp_path / "m"), "unet")
    assert parent == {
        "path": str(tmp_path / "m"),
        "provenance": {"epochs": 3},
        "reinitialised": [],
        "trained_on": {"a": ["0123456789abcdef"]},
    }  # the parent's data travels on
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(fresh(x), trained(x))
    three = create_model("unet", pretrained=False, encoder="test_efficientnet", classes=3)
    head = {k: v.clone() for k, v in three.state_dict().items()}
    parent = _init_from(three, str(tmp_path / "m"), "unet")
    assert parent["reinitialised"] == ["segmentation_head.0.weight", "segmentation_head.0.bias"]
    for k, v in three.state_dict().items():  # everything but the head comes from the checkpoint
        expected = head[k] if k in parent["reinitialised"] else trained.state_dict()[k]
        torch.testing.assert_close(v, expected)
    with pytest.raises(ColonsegError, match="only output heads may differ"):
        _init_from(
            create_model(
                "unet",
                pretrained=False,
                encoder="test_efficientnet",
                classes=1,
                decoder_channels=[32, 16, 8, 8, 8],
            ),
            str(tmp_path / "m"),
            "unet",
        )
    with pytest.raises(ColonsegError, match="a unet checkpoint cannot initialise pranet"):
        _init_from(
            create_model("pranet", pretrained=False, **kwargs), str(tmp_path / "m"), "pranet"
        )
    # a binary PraNet initialises a 3-class one: its class heads are new, all else is copied
    binary = create_model("pranet", pretrained=False, **kwargs).eval()
    save_pretrained(binary, ModelMeta(arch="pranet", init_kwargs=kwargs), tmp_path / "p")
    pranet3 = create_model("pranet", pretrained=False, encoder="test_efficientnet", classes=3)
    parent = _init_from(pranet3, str(tmp_path / "p"), "pranet")
    new = set(pranet3.state_dict()) - set(binary.state_dict())
    assert new and set(parent["reinitialised"]) == new
    for k, v in binary.state_dict().items():
        torch.testing.assert_close(pranet3.state_dict()[k], v)


def test_init_encoder_from_copies_only_the_encoder_across_architectures(tmp_path):
    from colonseg.engine.checkpoint import ModelMeta
    from colonseg.engine.train import _encoder_tensors, _init_encoder_from
    from colonseg.models import create_model

    kwargs = {"encoder": "test_efficientnet", "classes": 1}
    unet = create_model("unet", pretrained=False, **kwargs).eval()  # smp: encoder.model.*
    save_pretrained(unet, ModelMeta(arch="unet", init_kwargs=kwargs, trained_on={"a": ["ab"]}),
                    tmp_path / "u")  # fmt: skip
    encoder = _encoder_tensors(unet.state_dict())
    for arch in ("pranet", "deeplabv3plus"):  # colonseg's own (encoder.body.*) and smp's
        net = create_model(arch, pretrained=False, encoder="test_efficientnet", classes=3)
        before = {k: v.clone() for k, v in net.state_dict().items()}
        parent = _init_encoder_from(net, str(tmp_path / "u"))
        assert parent["encoder_only"] and parent["trained_on"] == {"a": ["ab"]}
        after = net.state_dict()
        for k, v in after.items():
            if k.startswith("encoder."):
                torch.testing.assert_close(v, encoder[k.split(".", 2)[2]])
            else:  # decoder and heads keep their fresh weights
                torch.testing.assert_close(v, before[k])
        assert any(not torch.equal(before[k], after[k]) for k in after if k.startswith("encoder."))
    other = create_model("unet", pretrained=False, encoder="resnet18", classes=1)
    with pytest.raises(ColonsegError, match="does not fit the configured one"):
        _init_encoder_from(other, str(tmp_path / "u"))


def test_learning_curves_draw_only_the_metrics_a_run_logged(tmp_path):
    from PIL import Image

    from colonseg.viz.curves import plot_curves

    csv = tmp_path / "metrics.csv"
    csv.write_text(
        "epoch,step,train/loss_epoch,val/dice\n0,9,0.5,\n0,9,,0.7\n1,19,0.3,\n1,19,,0.8\n"
    )
    one_panel = Image.open(plot_curves(csv, tmp_path / "loss.png", ("loss",))).size[0]
    # loss and dice logged: accuracy and f1 get no empty panel
    assert Image.open(plot_curves(csv, tmp_path / "all.png")).size[0] == 2 * one_panel


def test_evaluate_warns_when_it_scores_the_training_images(tiny_cfg, tmp_path):
    from typer.testing import CliRunner

    from colonseg.cli.main import app
    from colonseg.data.synthetic import write_folder_dataset

    model = run_train(tiny_cfg)["model_dir"]
    train = tiny_cfg.data.train[0].path
    other = write_folder_dataset(tmp_path / "other", n=3, size=64, seed=50)
    args = ["evaluate", "--model", str(model), "--out", str(tmp_path / "eval")]
    seen = CliRunner().invoke(app, [*args, "--data", train, "--data", str(other)])
    assert seen.exit_code == 0, seen.output
    assert f"warning: 8 of 11 evaluated images were used to train {model}" in seen.output
    unseen = CliRunner().invoke(app, [*args, "--data", str(other)])
    assert unseen.exit_code == 0 and "warning" not in unseen.output


@pytest.mark.parametrize(("mode", "passes"), [("all", 3), ("one", 1)])
def test_multi_scale_modes_cost_what_they_say(tiny_batch, mode, passes):
    """``all``: each batch at every scale (PraNet); ``one``: a single drawn scale per batch."""
    from colonseg.methods.supervised.module import SupervisedModule
    from colonseg.models import create_model

    net = create_model("unet", encoder="test_efficientnet", pretrained=False)
    module = SupervisedModule(net, train_scales=[0.5, 1.0, 1.5], train_scale_mode=mode)
    sizes = []
    net.register_forward_hook(lambda m, args, out: sizes.append(args[0].shape[-1]))
    torch.manual_seed(0)
    drawn = set()
    for _ in range(8):
        sizes.clear()
        module.training_step(tiny_batch, 0)
        # a drawn scale other than 1 also scores the batch at its own size (no grad)
        trained = sizes[:passes]
        assert len(trained) == passes and set(trained) <= {32, 64, 96}
        drawn.update(trained)
    assert drawn == {32, 64, 96}  # every scale is used over the batches


def test_multi_scale_mode_is_checked():
    from colonseg.methods.supervised.module import SupervisedModule
    from colonseg.models import create_model

    net = create_model("unet", encoder="test_efficientnet", pretrained=False)
    with pytest.raises(ColonsegError, match="data.train_scale_mode: all or one"):
        SupervisedModule(net, train_scales=[1.0, 1.5], train_scale_mode="some")


def test_encoder_lr_scale_slows_only_the_encoder(tiny_batch):
    """``optim.encoder_lr_scale``: the encoder's parameters learn at ``lr × scale``; at 0 an
    optimiser step leaves them as they were while the decoder moves."""
    from colonseg.methods.supervised.module import SupervisedModule
    from colonseg.models import create_model

    torch.manual_seed(0)
    net = create_model("unet", encoder="test_efficientnet", pretrained=False)
    module = SupervisedModule(net, scheduler="none", encoder_lr_scale=0.0)
    opt = module.configure_optimizers()
    assert sorted(g["lr"] for g in opt.param_groups) == [0.0, 1e-3]
    before = {k: v.detach().clone() for k, v in net.named_parameters()}
    module.training_step(tiny_batch, 0).backward()
    opt.step()
    moved = {k for k, v in net.named_parameters() if not torch.equal(v, before[k])}
    assert moved and all(not k.startswith("encoder.") for k in moved)
    assert any(k.startswith("decoder.") for k in moved)

    with pytest.raises(ColonsegError, match=r"optim.encoder_lr_scale: a factor in \[0, 1\]"):
        SupervisedModule(net, encoder_lr_scale=2.0)


def test_ema_decay_makes_the_weight_average_the_model(tiny_cfg):
    """``trainer.ema_decay``: ``model/``, the epoch copies and ``last.ckpt`` hold the moving
    average of the weights after each step, not the last step's weights; a resume continues it."""
    import lightning as L
    from omegaconf import OmegaConf

    from colonseg.engine.config import load_config

    steps = []

    class Record(L.Callback):
        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            steps.append({k: v.detach().clone() for k, v in module.net.named_parameters()})

    decay = 0.5
    cfg = OmegaConf.merge(
        tiny_cfg,
        OmegaConf.from_dotlist([f"trainer.ema_decay={decay}", "trainer.checkpoint_every=1"]),
    )
    run = run_train(cfg, callbacks=[Record()])["run_dir"]
    assert len(steps) == 2
    # the first step's weights start the average, each later step moves it by (1 - decay)
    expected = {k: decay * steps[0][k] + (1 - decay) * steps[1][k] for k in steps[0]}
    for folder in ("model", "checkpoints/epoch_001"):
        net, _ = load_pretrained(run / folder)
        got = dict(net.named_parameters())
        for k, v in expected.items():
            torch.testing.assert_close(got[k], v, msg=f"{folder}: {k}")
        assert any(not torch.equal(got[k], steps[1][k]) for k in got)  # not the last step's
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert "current_model_state" in ckpt  # the raw weights travel with the average

    cfg.trainer.max_epochs = 2
    last = run_train(cfg, resume=True, allow_changed=True)["run_dir"] / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=True)["epoch"] == 1

    with pytest.raises(ColonsegError, match=r"trainer.ema_decay=1.0: a decay in \(0, 1\)"):
        load_config("polyp_unet_lite0", ["trainer.ema_decay=1.0"])
