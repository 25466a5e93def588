from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from colonseg.data.synthetic import create_disc_image, write_folder_dataset

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"


@pytest.fixture(autouse=True)
def _seed(monkeypatch, tmp_path_factory):
    torch.manual_seed(0)
    torch.set_num_threads(1)
    monkeypatch.setenv("COLONSEG_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


@pytest.fixture
def tiny_batch() -> dict:
    pairs = [create_disc_image(64, seed=i) for i in range(2)]
    image = torch.stack([torch.from_numpy(im).permute(2, 0, 1).float() / 255 for im, _ in pairs])
    mask = torch.stack([torch.from_numpy(m).float()[None] for _, m in pairs])
    return {"image": image, "mask": mask}


@pytest.fixture
def tiny_dataset_dir(tmp_path) -> Path:
    return write_folder_dataset(tmp_path / "tiny", n=8, size=64)


@pytest.fixture
def tiny_cfg(tiny_dataset_dir, tmp_path):
    from colonseg.engine.config import load_config

    d = str(tiny_dataset_dir)
    return load_config(
        "polyp_unet_lite0",
        [
            "name=tiny",
            f"out_dir={tmp_path / 'runs'}",
            "model.encoder=test_efficientnet",
            "model.pretrained=false",
            "model.kwargs={}",
            f"data.train=[{{path: {d}}}]",
            f"data.val=[{{path: {d}}}]",
            "data.image_size=64",
            "data.batch_size=4",
            "trainer.max_epochs=1",
            "trainer.limit_train_batches=2",
            "trainer.limit_val_batches=1",
            "trainer.accelerator=cpu",
            "trainer.progress_bar=false",
            "trainer.log_every_n_steps=1",
        ],
    )


def shared_dataset(name: str) -> Path:
    path = SHARED / name
    if not path.is_dir():
        pytest.skip(f"{path} not present (shared datasets are optional for tests)")
    return path


def random_frames(n: int, size: int = 64, seed: int = 0) -> np.ndarray:
    """``n`` random ``size``-pixel RGB frames, uint8 (for memory banks)."""
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def calibrated_attention_unet() -> torch.nn.Module:
    """A tiny untrained ``attention_unet`` in eval mode whose batch-norm statistics are set
    from one batch of noise, so its attention maps respond to the input (with the initial
    statistics they sit at 0.5)."""
    from colonseg.models import create_model

    torch.manual_seed(0)
    net = create_model("attention_unet", encoder="test_efficientnet", pretrained=False)
    for m in net.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.momentum = None  # a cumulative average: one batch sets the statistics
    net.train()
    with torch.no_grad():
        net(torch.randn(4, 3, 64, 64))
    return net.eval()
