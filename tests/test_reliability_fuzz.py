"""A short run of ``benchmarks/fuzz_readers.py`` (the bounded fuzz run documented in
``docs/reliability.md`` uses 2000 inputs per seed): no reader may crash."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

pytest.importorskip("hypothesis")
_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "fuzz_readers.py"
_spec = importlib.util.spec_from_file_location("fuzz_readers", _PATH)
fuzz_readers = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fuzz_readers)


@pytest.mark.parametrize("kind", sorted(fuzz_readers.seeds()))
def test_mutated_files_give_clean_errors_or_valid_arrays(kind, tmp_path):
    seed = fuzz_readers.seeds()[kind]
    for row in fuzz_readers.fuzz(kind, seed, examples=25, folder=tmp_path):
        assert row["inputs"] == 25
        assert row["crashes"] == 0, row["crash_examples"]
        assert row["decoded"] + row["clean errors"] == row["inputs"]
