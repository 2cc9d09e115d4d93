# SPDX-License-Identifier: Apache-2.0
"""One error contract for every command: 0 success, 1 verification/tolerance failure, 2 bad input or environment
(one line, no traceback), 130 interrupted; inputs and outputs checked before the long work."""
from __future__ import annotations

import json
import warnings

import pytest

from detr_deploy.cli import args as cli_args
from detr_deploy.cli import bench, build, export, infer, parity, render, serve, train, triton

COMMANDS = {"detr-export": export, "detr-build": build, "detr-infer": infer, "detr-parity": parity,
            "detr-bench": bench, "detr-render": render, "detr-train": train, "detr-triton": triton,
            "detr-serve": serve}


@pytest.fixture(scope="module")
def artifact(exported):
    return exported("deformable-detr", "gridsample", dynamic=True, size=(192, 256))


def _fails(module, argv, capsys, message, status=2):
    code = module.run(module.main, argv) if hasattr(module, "run") else cli_args.run(module.main, argv)
    err = capsys.readouterr().err
    assert code == status, err
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert errors and message in errors[-1], err
    return err


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_help_states_the_exit_codes(name, capsys):
    with pytest.raises(SystemExit) as exit_info:
        COMMANDS[name].build_parser().parse_args(["--help"])
    assert exit_info.value.code == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "exit status: 0 success; 1 a verification or tolerance failure; 2 bad input" in out and "130" in out
    assert "3 an internal error" in out


def test_argparse_errors_and_range_checks_are_status_2(artifact, photo_folder, capsys):
    _, path = artifact
    with pytest.raises(SystemExit) as exit_info:
        infer.main([str(path), str(photo_folder), "--threshold", "35"])
    assert exit_info.value.code == 2
    assert "outside [0, 1]" in capsys.readouterr().err


def test_missing_inputs_are_named(artifact, photo_folder, tmp_path, capsys):
    _, path = artifact
    _fails(export, ["--model", str(tmp_path / "ckpt" / "missing.pth")], capsys, "missing.pth: no such file or folder")
    _fails(infer, [str(path), str(tmp_path / "nowhere"), "-o", str(tmp_path / "o")], capsys,
           "nowhere: no such file or folder")
    empty = tmp_path / "empty"
    empty.mkdir()
    _fails(infer, [str(path), str(empty), "-o", str(tmp_path / "o")], capsys, "no images in this folder")
    _fails(infer, [str(tmp_path / "none.onnx"), str(photo_folder)], capsys, "none.onnx: no such file")
    _fails(bench, [str(tmp_path / "none.engine")], capsys, "none.engine: no such file")
    assert not (tmp_path / "o").exists()  # nothing was created for a refused run


def test_output_locations_are_checked_before_the_work(artifact, photo_folder, tmp_path, capsys, monkeypatch):
    _, path = artifact
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    calls = []
    monkeypatch.setattr("detr_deploy.runtime.detector.open_backend", lambda *a, **k: calls.append(a))
    _fails(infer, [str(path), str(photo_folder), "--out-dir", str(a_file)], capsys, "exists and is a file")
    _fails(infer, [str(path), str(photo_folder), "-o", str(a_file / "sub")], capsys, "is a file, not a folder")
    _fails(bench, [str(path), "-o", str(tmp_path)], capsys, "is a folder; give a file name")
    _fails(render, ["-o", str(tmp_path), "--count", "1"], capsys, "is not an earlier render")
    _fails(export, ["--model", "deformable-detr-shapes", "-o", str(a_file / "x.onnx")], capsys,
           "is a file, not a folder")
    assert calls == []  # no artifact was even opened


def test_operating_system_errors_are_one_line_status_2(capsys):
    def denied(argv):
        raise PermissionError(13, "Permission denied", "/root/report.json")

    assert cli_args.run(denied, []) == 2
    assert capsys.readouterr().err.strip() == "error: Permission denied: /root/report.json"


def test_interrupt_is_130_and_warnings_are_one_line(capsys):
    def warns_then_interrupts(argv):
        warnings.warn("first line\n  second line", UserWarning, stacklevel=2)
        raise KeyboardInterrupt

    assert cli_args.run(warns_then_interrupts, []) == 130
    err = capsys.readouterr().err.splitlines()
    assert err[0] == "warning: first line second line" and err[1].startswith("interrupted")


def test_detr_parity_checks_everything_before_loading_the_model(artifact, photo_folder, tmp_path, capsys,
                                                               monkeypatch):
    _, path = artifact
    loads = []
    monkeypatch.setattr(cli_args.ModelArgs, "load", staticmethod(lambda args: loads.append(args)))
    base = ["--model", "deformable-detr", "--weights", "random"]
    _fails(parity, base + ["--artifacts", str(tmp_path / "x.onnx"), "--images", str(photo_folder)], capsys,
           "x.onnx: no such file")
    _fails(parity, base + ["--artifacts", str(path), "--images", str(tmp_path / "nope")], capsys,
           "nope: no such file or folder")
    coco = {"images": [{"id": 1, "file_name": "elsewhere/astronaut.jpg"}], "annotations": [], "categories": []}
    (tmp_path / "ann.json").write_text(json.dumps(coco))
    pytest.importorskip("pycocotools")
    _fails(parity, base + ["--artifacts", str(path), "--images", str(photo_folder), "--coco",
                           str(tmp_path / "ann.json")], capsys, "--images must be the folder their file_name")
    assert loads == []
    assert parity.run(parity.main, ["--list-models"]) == 0
    assert "deformable-detr-two-stage" in capsys.readouterr().out


def test_detr_parity_refuses_a_model_that_does_not_fit(artifact, photo_folder, capsys):
    _, path = artifact  # a tiny model with 12 queries and 5 classes
    _fails(parity, ["--model", "deformable-detr", "--weights", "random", "--artifacts", str(path), "--images",
                    str(photo_folder)], capsys, "the model does not fit")


def test_deprecated_spellings_still_work_and_say_what_to_write(artifact, photo_folder, tmp_path, capsys):
    _, path = artifact
    out = tmp_path / "legacy"
    assert infer.run(infer.main, [str(path), str(photo_folder / "coffee.jpg"), "--out-dir", str(out), "--batch", "1",
                                  "--device", "cpu", "--no-draw"]) == 0
    err = capsys.readouterr().err
    assert "--out-dir is deprecated" in err and "use -o/--output" in err and "--batch is deprecated" in err
    assert (out / "detections.json").is_file()
    assert cli_args.device("1") == "cuda:1" and "use --device cuda:1" in capsys.readouterr().err


def test_a_wrapped_interrupt_is_still_130_and_a_bug_is_3(capsys):
    def wrapped(argv):  # what torch's exporter does with a Ctrl-C during tracing
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt as exc:
            raise RuntimeError("Failed to export the model with torch.export") from exc

    assert cli_args.run(wrapped, []) == 130
    assert "interrupted" in capsys.readouterr().err

    def bug(argv):
        raise ZeroDivisionError("a bug")

    assert cli_args.run(bug, []) == 3
    err = capsys.readouterr().err
    assert "Traceback" in err and "internal error: ZeroDivisionError: a bug" in err


def test_argparse_errors_are_one_line(capsys):
    with pytest.raises(SystemExit) as exit_info:
        export.build_parser().parse_args(["--opset", "x"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "error: argument --opset: invalid int value: 'x' (see detr-export --help)"]
