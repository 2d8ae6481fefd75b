"""Hostile or careless merge/export outputs: never delete what tuneforge did not write, never half a model."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.export.conftest import lora_run  # noqa: F401  (session fixture: a LoRA run on the tiny model)
from tuneforge.cli.main import main
from tuneforge.errors import ExportError
from tuneforge.export import merge
from tuneforge.export.merging import find_source, merge_source
from tuneforge.export.output import MARKER


@pytest.fixture(autouse=True)
def wide_console(monkeypatch):
    monkeypatch.setenv("COLUMNS", "10000")  # rich would wrap long error lines (paths) on a narrow terminal


def _err(capsys) -> str:
    return capsys.readouterr().err


@pytest.fixture
def someone_elses_model(tmp_path, tiny_model_dir):
    """An existing model folder that tuneforge did not write (no marker)."""
    return Path(shutil.copytree(tiny_model_dir, tmp_path / "their-model"))


@pytest.mark.parametrize("command", ["merge", "export"])
def test_unrelated_model_folder_is_not_replaced(lora_run, someone_elses_model, capsys, command):  # noqa: F811
    before = sorted(p.name for p in someone_elses_model.iterdir())
    assert main([command, str(lora_run), "-o", str(someone_elses_model)]) == 2
    assert "not written by tuneforge" in _err(capsys)
    assert sorted(p.name for p in someone_elses_model.iterdir()) == before


def test_unrelated_folder_error_names_overwrite(lora_run, someone_elses_model, capsys):  # noqa: F811
    assert main(["merge", str(lora_run), "-o", str(someone_elses_model)]) == 2
    err = _err(capsys)
    assert "was not written by tuneforge" in err and "--overwrite" in err


def test_overwrite_replaces_and_marks_the_folder(lora_run, someone_elses_model):  # noqa: F811
    (someone_elses_model / "notes.txt").write_text("mine")
    assert main(["merge", str(lora_run), "-o", str(someone_elses_model), "--overwrite"]) == 0
    assert (someone_elses_model / MARKER).is_file() and not (someone_elses_model / "notes.txt").exists()
    # Now tuneforge wrote it, so merging again needs no --overwrite.
    assert main(["merge", str(lora_run), "-o", str(someone_elses_model)]) == 0


def test_output_inside_the_adapter_folder_is_refused(lora_run, capsys):  # noqa: F811
    before = sorted(p.name for p in (lora_run / "adapter").iterdir())
    for target in (lora_run / "adapter" / "merged", lora_run / "adapter", lora_run):
        assert main(["merge", str(lora_run), "-o", str(target)]) == 2
        assert "would overwrite" in _err(capsys)
    assert sorted(p.name for p in (lora_run / "adapter").iterdir()) == before
    with pytest.raises(ExportError, match="would overwrite"):
        merge(lora_run / "adapter", lora_run / "adapter" / "sub")


@pytest.mark.parametrize("command", ["merge", "export"])
def test_output_that_is_a_file_is_a_clear_error(lora_run, tmp_path, capsys, command):  # noqa: F811
    target = tmp_path / "model.txt"
    target.write_text("keep me")
    assert main([command, str(lora_run), "-o", str(target)]) == 2
    assert "is a file, not a folder" in _err(capsys)
    assert main([command, str(lora_run), "-o", str(target / "sub")]) == 2
    assert "is a file, so no folder can be made" in _err(capsys)
    assert target.read_text() == "keep me"


def test_unwritable_output_is_a_clear_error(lora_run, capsys):  # noqa: F811
    # /sys refuses new folders even to root (EPERM), like a read-only mount.
    assert main(["merge", str(lora_run), "-o", "/sys/tuneforge-merged"]) == 2
    err = _err(capsys)
    assert "cannot create output /sys/tuneforge-merged" in err and "Traceback" not in err


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores folder permissions")
def test_read_only_parent_is_a_clear_error(lora_run, tmp_path, capsys):  # noqa: F811
    parent = tmp_path / "ro"
    parent.mkdir()
    parent.chmod(0o555)
    try:
        assert main(["merge", str(lora_run), "-o", str(parent / "merged")]) == 2
        assert "no permission to write" in _err(capsys)
    finally:
        parent.chmod(0o755)


def test_failed_write_leaves_no_folder_and_keeps_the_old_one(lora_run, tmp_path):  # noqa: F811
    source = find_source(lora_run)

    def fail(folder: Path, base: str) -> None:
        assert (folder / "model.safetensors").is_file()  # the model was written, then something broke
        raise OSError(28, "No space left on device")

    out = tmp_path / "merged"
    with pytest.raises(ExportError, match="No space left"):
        merge_source(source, out, add=fail)
    assert not out.exists() and list(tmp_path.iterdir()) == []  # no half folder, no hidden leftovers

    merge_source(source, out)
    good = sorted(p.name for p in out.iterdir())
    with pytest.raises(ExportError):
        merge_source(source, out, add=fail)
    assert sorted(p.name for p in out.iterdir()) == good and [p.name for p in tmp_path.iterdir()] == ["merged"]


def test_export_gguf_output_checks(lora_run, someone_elses_model, capsys):  # noqa: F811
    assert main(["export", str(lora_run), "--format", "gguf", "--no-check", "-o", str(someone_elses_model)]) == 2
    assert "not written by tuneforge" in _err(capsys)
    assert main(["export", str(lora_run), "--format", "gguf", "--no-check", "-o", str(lora_run / "merged" / "g")]) == 2
    assert "would overwrite" in _err(capsys)
