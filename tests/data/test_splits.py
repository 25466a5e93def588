"""Grouped K-fold splits: no group in two folds, every stem in one fold's val, CVC-ClinicDB's
sequence table, ``datasets split`` and ``data.fold``."""

from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

from colonseg.cli.main import app
from colonseg.data.layouts import find_pairs
from colonseg.data.sources import DataSource
from colonseg.data.splits import (
    fold_sources,
    load_groups,
    make_folds,
    parse_sequence_table,
    run_split,
    save_folds,
)
from colonseg.data.synthetic import write_folder_dataset
from colonseg.errors import ColonsegError
from tests.conftest import shared_dataset

# the format of CVC-ClinicDB's ORIGINAL_README.txt table: tabs, uneven spaces, a ragged row
README = """The correspondence between the number of frame and the video sequence is as follows:

       ----------------------------------
       |   Frame Number   |  Sequence\t      |
       ----------------------------------
       |      1 to  4     |\t 1\t|
       |      5 to   6    |\t 2   |
       |      7 to   9    |3 \t|
\t  |     10 to  12    |4\t|
       ----------------------------------

Bernal, J., S\xe1nchez, F. J.
"""


def _check_folds(stems, groups, folds, result):
    assert len(result) == folds
    vals = [s for f in result for s in f.val]
    assert sorted(vals) == sorted(stems)  # every stem in exactly one fold's val
    for f in result:
        assert sorted(f.train + f.val + f.tune) == sorted(stems)
        val_groups = {groups[s] for s in f.val}
        assert not val_groups & {groups[s] for s in f.train + f.tune}
        assert not {groups[s] for s in f.tune} & {groups[s] for s in f.train}
    owners = {}
    for k, f in enumerate(result):
        for s in f.val:
            assert owners.setdefault(groups[s], k) == k  # no group in two folds


@pytest.mark.parametrize("trial", range(25))
def test_no_group_crosses_folds_over_random_groupings(trial):
    rng = np.random.default_rng(trial)
    n, n_groups = int(rng.integers(10, 80)), int(rng.integers(3, 12))
    stems = [f"f{i}" for i in rng.permutation(n)]
    groups = {s: f"g{rng.integers(n_groups)}" for s in stems}
    folds = int(rng.integers(2, len(set(groups.values())) + 1))
    val = float(rng.choice([0.0, 0.1, 0.3]))
    result = make_folds(stems, groups, folds, val, seed=trial)
    _check_folds(stems, groups, folds, result)
    sizes = [len(f.val) for f in result]
    biggest = max(list(groups.values()).count(g) for g in set(groups.values()))
    assert max(sizes) - min(sizes) <= biggest  # balanced up to one group
    if val and folds < len(set(groups.values())) - 1:
        assert all(f.tune for f in result)
    assert make_folds(stems, groups, folds, val, seed=trial) == result  # deterministic


def test_ungrouped_folds_are_seeded_and_files_keep_dataset_order(tmp_path):
    stems = [str(i) for i in range(20)]
    a, b = make_folds(stems, None, 4, seed=0), make_folds(stems, None, 4, seed=1)
    assert a != b and all(len(f.val) == 5 for f in a)
    save_folds(a, tmp_path)
    lines = (tmp_path / "fold0_train.txt").read_text().split()
    assert lines == sorted(lines, key=int) == a[0].train
    assert not list(tmp_path.glob("*tune*"))


@pytest.mark.parametrize(
    "args, message",
    [
        ((["a", "a", "b"], None, 2), "duplicate stems"),
        ((["a", "b"], {"a": "x"}, 2), "1 stems have no group"),
        ((["a", "b", "c"], {"a": "x", "b": "x", "c": "y"}, 3), "2 groups"),
        ((["a", "b", "c"], None, 2, 1.0), "val=1.0"),
    ],
)
def test_make_folds_refuses_bad_input(args, message):
    with pytest.raises(ColonsegError, match=message):
        make_folds(*args)


def test_save_folds_keeps_existing_splits_unless_told(tmp_path):
    stems = [str(i) for i in range(12)]
    save_folds(make_folds(stems, None, 3, val=0.2), tmp_path)
    assert (tmp_path / "fold2_tune.txt").is_file()
    save_folds(make_folds(stems, None, 3, val=0.2), tmp_path)  # identical: fine
    with pytest.raises(ColonsegError, match="exist and differ.*--overwrite"):
        save_folds(make_folds(stems, None, 3, seed=5), tmp_path)
    save_folds(make_folds(stems, None, 3, seed=5), tmp_path, overwrite=True)
    assert not list(tmp_path.glob("*tune*"))  # stale tune files removed


def test_clinicdb_sequence_table_is_parsed():
    table = parse_sequence_table(README)
    assert sorted(table) == list(range(1, 13))
    assert [table[f] for f in (1, 4, 5, 7, 9, 12)] == ["seq1", "seq1", "seq2", "seq3", "seq3",
                                                        "seq4"]  # fmt: skip
    assert parse_sequence_table("no table here") == {}
    with pytest.raises(ColonsegError, match="frame 4 is listed twice"):
        parse_sequence_table(README + "|  4 to 5 | 9 |")


def test_groups_from_readme_csv_or_none(tmp_path):
    stems = [str(i) for i in range(1, 13)]
    assert load_groups(tmp_path, stems) == (None, "")
    (tmp_path / "ORIGINAL_README.txt").write_bytes(README.encode("latin-1"))
    groups, source = load_groups(tmp_path, stems)
    assert groups["6"] == "seq2" and "ORIGINAL_README.txt" in source
    with pytest.raises(ColonsegError, match="frame '13' is not in"):
        load_groups(tmp_path, [*stems, "13"])
    csv = tmp_path / "groups.csv"
    csv.write_text("stem,patient\n" + "".join(f"{s}.png,p{int(s) % 3}\n" for s in stems))
    groups, source = load_groups(tmp_path, stems, csv)  # the CSV wins over the README
    assert groups["6"] == "p0" and source == "groups.csv"
    with pytest.raises(ColonsegError, match="1 images have no group: \\['13'\\]"):
        load_groups(tmp_path, [*stems, "13"], csv)
    with pytest.raises(ColonsegError, match="2 stems have no image"):
        load_groups(tmp_path, stems[2:], csv)


def test_datasets_split_cli_groups_by_csv(tmp_path):
    root = write_folder_dataset(tmp_path / "d", n=12, size=32)
    (tmp_path / "g.csv").write_text("".join(f"case_{i},video{i // 3}\n" for i in range(12)))
    out = tmp_path / "splits_out"
    args = ["datasets", "split", str(root), "--folds", "4", "--groups", str(tmp_path / "g.csv"),
            "--out", str(out)]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "12 images in 4 groups (from g.csv)" in result.output
    assert result.output.count("val 3 (1 group)") == 4
    for k in range(4):
        val = (out / f"fold{k}_val.txt").read_text().split()
        assert len({s.split("_")[1] for s in val}) == 3 and len({int(s[5:]) // 3 for s in val}) == 1
    result = CliRunner().invoke(app, ["datasets", "split", str(root), "--folds", "3"])
    assert result.exit_code == 0 and "warning: no groups" in result.output
    assert (root / "splits" / "fold2_val.txt").is_file()


def test_datasets_split_within_a_split_keeps_the_test_images_out(tmp_path):
    root = write_folder_dataset(tmp_path / "d", n=12, size=32)
    (root / "splits").mkdir()
    (root / "splits" / "train.txt").write_text("".join(f"case_{i}\n" for i in range(8)))
    out = tmp_path / "folds"
    args = ["datasets", "split", str(root), "--folds", "2", "--within", "train", "--out", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    folded = {s for k in range(2) for s in (out / f"fold{k}_val.txt").read_text().split()}
    assert folded == {f"case_{i}" for i in range(8)}  # case_8..11 (the test images) left out


def test_clinicdb_folds_share_no_sequence(tmp_path):
    root = shared_dataset("cvc-clinicdb")  # skipped when absent
    stems = [p.id for p in find_pairs(root)]
    groups, _ = load_groups(root, stems)
    assert len(stems) == 612 and len(groups) == 612 and len(set(groups.values())) == 29
    report = run_split(root, folds=5, out=tmp_path)
    assert report["n_groups"] == 29 and sum(f["val"] for f in report["folds"]) == 612
    seqs = [{groups[s] for s in (tmp_path / f"fold{k}_val.txt").read_text().split()}
            for k in range(5)]  # fmt: skip
    assert sum(map(len, seqs)) == 29 and len(set().union(*seqs)) == 29
    train0 = {groups[s] for s in (tmp_path / "fold0_train.txt").read_text().split()}
    assert not train0 & seqs[0]


def test_data_fold_picks_the_fold_files(tmp_path):
    from colonseg.engine.config import load_config
    from colonseg.methods.supervised.method import Supervised

    root = write_folder_dataset(tmp_path / "d", n=8, size=32)
    overrides = [f"data.train=[{{path: {root}}}]", "data.val=[]", "data.fold=1",
                 "model.encoder=test_efficientnet", "model.pretrained=false"]  # fmt: skip
    cfg = load_config("polyp_unet_lite0", overrides)
    with pytest.raises(ColonsegError, match="fold1_train.txt: not found.*datasets split"):
        Supervised().sources(cfg)
    run_split(root, folds=4)
    train, val = Supervised().sources(cfg)
    assert [s.display_name() for s in train + val] == ["d:fold1_train", "d:fold1_val"]
    expected = (root / "splits" / "fold1_train.txt").read_text().split()
    assert [p.id for p in find_pairs(train[0].path, split=train[0].split)] == expected
    assert len(find_pairs(val[0].path, split=val[0].split)) == 2
    dm = Supervised().datamodule(cfg, "fit")
    assert [s.split for s in dm.train_sources + dm.val_sources] == [train[0].split, val[0].split]


def test_fold_sources_keep_explicit_split_files_and_read_out_folders(tmp_path):
    root = write_folder_dataset(tmp_path / "d", n=8, size=32)
    out = tmp_path / "elsewhere"
    run_split(root, folds=2, out=out)
    (root / "splits").mkdir()
    (root / "splits" / "test.txt").write_text("case_0\n")
    train, val = fold_sources([DataSource(str(root), split=str(out))],
                              [DataSource(str(root), split="test")], 0)  # fmt: skip
    assert train[0].split == str(out / "fold0_train.txt") and val[0].split == "test"
    with pytest.raises(ColonsegError, match="folds are numbered from 0"):
        fold_sources(train, val, -1)
    # every training source names its own split: the fold would be ignored, so it is refused
    with pytest.raises(ColonsegError, match="no training source reads fold files"):
        fold_sources([DataSource(str(root), split="test")], [], 0)


def test_byte_identical_frames_stay_in_one_fold(tmp_path):
    import shutil

    root = write_folder_dataset(tmp_path / "d", n=9, size=32)
    images = sorted((root / "images").iterdir())
    shutil.copyfile(images[0], images[8])  # case_8 is a copy of case_0: one frame twice
    out = tmp_path / "folds"
    result = CliRunner().invoke(app, ["datasets", "split", str(root), "--folds", "3",
                                      "--out", str(out)])  # fmt: skip
    assert result.exit_code == 0, result.output
    vals = [(out / f"fold{k}_val.txt").read_text().split() for k in range(3)]
    assert sum(images[0].stem in v and images[8].stem in v for v in vals) == 1
