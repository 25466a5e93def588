"""The command line starts without torch, prints its version, fits 80 columns, lists the zoo
and the shipped configs, and hands ``train`` to the engine with every option."""

from __future__ import annotations

import subprocess
import sys
import types

import pytest
from typer.testing import CliRunner

import colonseg
from colonseg.cli.main import app
from colonseg.cli.train import print_train_result
from colonseg.cli.zoo import data_of, headline_of, method_of, zoo_rows
from colonseg.config import list_configs

runner = CliRunner()


@pytest.mark.parametrize("module", ["colonseg", "colonseg.cli.main"])
def test_importing_the_cli_loads_no_torch(module):
    code = (
        f"import sys, {module}; heavy = {{'torch', 'lightning'}} & set(sys.modules); "
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_public_names_load_lazily():
    assert colonseg.read_image.__name__ == "read_image"
    assert set(colonseg.__all__) <= set(dir(colonseg))
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        colonseg.nope  # noqa: B018


def test_version():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output == f"colonseg {colonseg.__version__}\n"
    assert colonseg.__version__ == "0.1.0"


@pytest.mark.parametrize(
    "command",
    [[], ["train"], ["predict"], ["evaluate"], ["demo"], ["export"], ["ensemble"], ["synth"],
     ["models"], ["datasets"], ["datasets", "check"], ["datasets", "split"], ["mssg"],
     ["mssg", "propose"]],
)  # fmt: skip
def test_help_fits_80_columns_uncut(command):
    result = runner.invoke(app, [*command, "--help"], terminal_width=80)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert max(len(line) for line in lines) <= 80
    assert "…" not in result.output
    cut = [line for line in lines if line.endswith("...") and not line.startswith("Usage:")]
    assert not cut  # click shortens a command's first sentence to "..." when it is too long


def test_train_help_lists_the_shipped_configs():
    names = list_configs()
    assert {"mapseg/polyp", "mssg/glas", "medsam_box/polyp", "polyp_unet_lite0"} <= set(names)
    result = runner.invoke(app, ["train", "--help"], terminal_width=80)
    assert result.exit_code == 0
    text = " ".join(result.output.split())
    for name in names:
        assert name in text
    for option in ("--resume", "--quick", "--print-config", "--synthetic"):
        assert option in text


def test_zoo_rows_have_every_cell():
    rows = {row[0]: row for row in zoo_rows()}
    assert {"default", "mapseg_polyp", "mssg_medsam_glas", "polyp_automedsam"} <= set(rows)
    for row in rows.values():
        assert all(cell and cell != "-" and "?" not in cell for cell in row), row
    assert rows["mapseg_polyp"][1:3] == ("mapseg", "2x mapseg tf_efficientnet_lite0")
    assert rows["default"][3] == "kvasir-seg + cvc-clinicdb: pranet_train"
    refined, box = rows["mssg_medsam_glas"][3], rows["polyp_automedsam"][3]
    assert "no GlaS labels, litemedsam refinement (learnt from masks)" in refined
    assert "boxes only" in box and "LiteMedSAM" in box


def test_zoo_cells_from_config_json():
    assert method_of({"arch": "unet", "init_kwargs": {}, "class_names": ["gland"]}) == "mssg"
    assert method_of({"arch": "automedsam", "init_kwargs": {}}) == "medsam_box"
    prov = {"train": {"source": "data/polypgen-normal/images", "normal_frames": 8}}
    assert data_of(prov, "mapseg") == "polypgen-normal: 8 normal frames, no polyp labels"
    assert data_of({}, "supervised") == "-"
    metrics = {"a/dice": 0.81234, "a/miou": 0.7, "a/object_f1": 0.2, "b/dice": 0.5}
    assert headline_of(metrics, "mssg") == ["a dice 0.812", "b dice 0.500", "a miou 0.700"]


def test_print_train_result(capsys):
    stats = {"n": 3, "fp_area": 0.1, "dice": 0.5, "iou": 0.4, "aupro": 0.3, "a": 0.1, "b": 0.2}
    print_train_result({
        "model_dir": "runs/x/model",
        "metrics": {"val/dice": 0.123456, "train/loss": 1.0},
        "summary": {"kvasir-seg": stats},
        "evaluate_command": "colonseg evaluate --model runs/x/model",
    })  # fmt: skip
    lines = capsys.readouterr().out.splitlines()
    assert lines == [
        "model: runs/x/model",
        'val: {"val/dice": 0.1235}',
        "kvasir-seg: dice 0.5000, iou 0.4000, aupro 0.3000, fp_area 0.1000, a 0.1000, b 0.2000",
        "evaluate it with: colonseg evaluate --model runs/x/model",
    ]
    print_train_result({"model_dir": None, "metrics": {}})  # a DDP rank other than 0
    assert capsys.readouterr().out == ""


@pytest.fixture
def engine(monkeypatch):
    """Stand-ins for the engine's load_config and run_train that record their arguments."""
    calls = {}

    def load_config(config, overrides, quick=False):
        calls["load"] = (config, overrides, quick)
        from omegaconf import OmegaConf

        return OmegaConf.create({"name": config, "trainer": {"max_epochs": 1}})

    def run_train(cfg, resume=False, synthetic=False, allow_changed=False):
        calls["run"] = (cfg.name, resume, synthetic, allow_changed)
        return {"model_dir": "runs/m/model", "metrics": {}, "summary": {},
                "evaluate_command": "colonseg evaluate --model runs/m/model"}  # fmt: skip

    monkeypatch.setitem(
        sys.modules, "colonseg.engine.config", types.SimpleNamespace(load_config=load_config)
    )
    monkeypatch.setitem(
        sys.modules, "colonseg.engine.train", types.SimpleNamespace(run_train=run_train)
    )
    return calls


def test_train_passes_every_option_to_the_engine(engine):
    args = ["train", "mssg/glas", "trainer.max_epochs=2", "--quick", "--resume", "--synthetic",
            "--allow-changed"]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert engine["load"] == ("mssg/glas", ["trainer.max_epochs=2"], True)
    assert engine["run"] == ("mssg/glas", True, True, True)
    assert (
        result.output.splitlines()[-1] == "evaluate it with: colonseg evaluate --model runs/m/model"
    )


def test_train_print_config_does_not_train(engine):
    result = runner.invoke(app, ["train", "polyp_unet_lite0", "--print-config"])
    assert result.exit_code == 0 and "max_epochs: 1" in result.output
    assert engine["load"] == ("polyp_unet_lite0", [], False) and "run" not in engine


def test_train_user_error_is_one_line(monkeypatch, engine):
    from colonseg.errors import ColonsegError

    def bad(config, overrides, quick=False):
        raise ColonsegError(f"{config}: config file not found")

    monkeypatch.setattr(sys.modules["colonseg.engine.config"], "load_config", bad)
    result = runner.invoke(app, ["train", "nosuch"])
    assert result.exit_code == 2 and result.output == "error: nosuch: config file not found\n"
