#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""CI user stage: what a new user does in their first hour, in a fresh virtualenv that has only what the README's
first command installs.

1. Copy the repository (tracked and untracked-but-not-ignored files) to a scratch folder, as a fresh clone would be.
2. Create an empty virtualenv and put it first on PATH.
3. Run every README block marked ``<!-- ci: user-stage -->`` exactly as printed, in that folder (the first block
   installs detr-deploy with its extras); each must exit 0.
4. Check what they wrote, then the bad inputs of the first-hour issue, each with its documented exit status and
   a one-line message without a traceback.

Standard library only: it runs before anything is installed. Usage: python3 .ci/user_stage.py [--keep DIR]
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MARKER = "<!-- ci: user-stage -->"
results: list[tuple[str, str, str]] = []  # (check, outcome, detail)


def readme_blocks() -> list[str]:
    """The bash blocks that follow the user-stage marker, joined into one script each (backslash continuations)."""
    text = (REPO / "README.md").read_text()
    blocks = re.findall(re.escape(MARKER) + r"\s*```bash\n(.*?)```", text, flags=re.S)
    if not blocks:
        sys.exit("user stage: no README block is marked " + MARKER)
    return blocks


def copy_repository(target: Path) -> None:
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"], cwd=REPO,
                           capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, files):
        source = REPO / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)


def run(command, cwd: Path, env: dict, timeout: float = 1800, check_name: str | None = None):
    start = time.time()
    shell = isinstance(command, str)
    proc = subprocess.run(command, cwd=cwd, env=env, shell=shell, executable="/bin/bash" if shell else None,
                          capture_output=True, text=True, timeout=timeout)
    proc.seconds = time.time() - start
    return proc


def expect(name: str, proc, status: int, message: str | None = None) -> None:
    err = proc.stderr
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    ok = proc.returncode == status and "Traceback" not in err
    if message is not None:
        ok = ok and any(message in line for line in lines)
    if status == 2:
        ok = ok and len(lines) >= 1
    last = lines[-1] if lines else (err.strip().splitlines() or [""])[-1]
    detail = f"exit {proc.returncode} (want {status}); {last}"
    results.append((name, "ok" if ok else "FAILED", detail[:200]))
    if not ok:
        print(f"--- {name} stderr:\n{err[-3000:]}", file=sys.stderr)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keep", default=None, help="work in this folder and keep it (default: a temporary one)")
    args = parser.parse_args()
    work = Path(args.keep or tempfile.mkdtemp(prefix="detr-deploy-user-"))
    work.mkdir(parents=True, exist_ok=True)
    repo, venv = work / "detr-deploy", work / "venv"
    if repo.exists():
        shutil.rmtree(repo)
    repo.mkdir()
    copy_repository(repo)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "PYTHON"))}
    env.update(PATH=f"{venv / 'bin'}:{env['PATH']}", VIRTUAL_ENV=str(venv), HF_HUB_OFFLINE="1",
               HF_HOME=str(work / "hf_home"), DETR_DEPLOY_CACHE=str(work / "cache"))
    run("python -m pip install -q --upgrade pip", repo, env)

    # --- the README, exactly as printed -----------------------------------------------------------------------
    for index, block in enumerate(readme_blocks(), start=1):
        script = "set -e\n" + block
        print(f"user stage: README block {index}:\n{block}", flush=True)
        proc = run(script, repo, env)
        results.append((f"README block {index}", "ok" if proc.returncode == 0 else "FAILED",
                        f"exit {proc.returncode} in {proc.seconds:.0f}s"))
        sys.stdout.write(proc.stdout[-4000:])
        sys.stderr.write(proc.stderr[-6000:])
        if proc.returncode != 0:
            return report()
    python = str(venv / "bin" / "python")
    installed = run([python, "-c", "import importlib.util as u; print(' '.join(m for m in ('transformers', 'pytest', "
                                   "'pycocotools', 'tensorrt') if u.find_spec(m)))"], repo, env).stdout.split()
    results.append(("only the README's extras installed", "ok" if not installed else "FAILED",
                    f"dev/eval/trt packages present: {installed or 'none'}"))

    # --- what the first block wrote -----------------------------------------------------------------------------
    onnx = repo / "shapes.onnx"
    umask = os.umask(0)
    os.umask(umask)
    mode = stat.S_IMODE(onnx.stat().st_mode) if onnx.exists() else None
    results.append(("shapes.onnx has normal permissions", "ok" if mode == 0o666 & ~umask else "FAILED",
                    f"mode {oct(mode) if mode is not None else 'missing'}"))
    detections = json.loads((repo / "detections" / "detections.json").read_text())
    drawn = sorted(p.name for p in (repo / "detections").glob("*_det.jpg"))
    ok = len(drawn) == 4 and detections and {d["image_id"] for d in detections} <= {1, 2, 3, 4}
    results.append(("detr-infer wrote detections and 4 drawings", "ok" if ok else "FAILED",
                    f"{len(detections)} detections, {len(drawn)} drawings"))
    leftovers = sorted(p.name for p in repo.iterdir() if p.name.startswith(".") and p.name.endswith(
        (".tmp", ".unverified", ".partial")))
    results.append(("no staging files left", "ok" if not leftovers else "FAILED", str(leftovers or "none")))

    # --- bad inputs: documented exit status, one line, no traceback ---------------------------------------------
    cli = lambda *argv: run(list(argv), repo, env, timeout=900)  # noqa: E731
    (repo / "a_file").write_text("not a folder")
    expect("missing checkpoint path", cli("detr-export", "--model", "checkpoints/missing.pth"), 2,
           "checkpoints/missing.pth: no such file or folder")
    expect("misspelt variant", cli("detr-export", "--model", "deformable-dert"), 2, "Did you mean deformable-detr")
    expect("output under a file", cli("detr-export", "--model", "deformable-detr-shapes", "-o", "a_file/x.onnx"), 2,
           "is a file, not a folder")
    expect("threshold 35", cli("detr-infer", "shapes.onnx", "scenes/images", "--threshold", "35"), 2)
    expect("missing images folder", cli("detr-infer", "shapes.onnx", "no_such_folder", "-o", "out1"), 2,
           "no_such_folder: no such file or folder")
    expect("--out-dir naming a file", cli("detr-infer", "shapes.onnx", "scenes/images", "--out-dir", "a_file"), 2,
           "exists and is a file")
    expect("missing artifact", cli("detr-infer", "missing.onnx", "scenes/images"), 2, "missing.onnx: no such file")
    expect("model that does not fit the artifact",
           cli("detr-parity", "--model", "deformable-detr", "--weights", "random", "--artifacts", "shapes.onnx",
               "--images", "scenes/images"), 2, "the model does not fit shapes.onnx")
    expect("detr-parity --list-models", cli("detr-parity", "--list-models"), 0)
    expect("--coco without pycocotools",
           cli("detr-parity", "--model", "deformable-detr-shapes", "--artifacts", "shapes.onnx", "--images",
               "scenes/images", "--coco", "scenes/annotations.json"), 2, "detr-deploy[eval]")
    expect("detr-build without TensorRT", cli("detr-build", "shapes.onnx"), 2, "detr-deploy[trt]")
    expect("render into a non-render folder", cli("detr-render", "-o", "detections", "--count", "1"), 2,
           "is not an earlier render")
    # Ctrl-C during an export: status 130 and nothing left
    # (a terminal's Ctrl-C reaches a process whose SIGINT is not ignored; CI may run this stage in the background,
    # where the shell ignores SIGINT and children inherit that: give the command the default disposition back)
    proc = subprocess.Popen(["detr-export", "--model", "deformable-detr-shapes", "-o", "interrupted.onnx"], cwd=repo,
                            env=env, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    for line in proc.stderr:
        if line.startswith("exporting"):
            time.sleep(5)
            proc.send_signal(signal.SIGINT)
            break
    rest = proc.stderr.read()
    proc.wait(timeout=300)
    left = sorted(p.name for p in repo.iterdir() if "interrupted" in p.name)
    results.append(("Ctrl-C during detr-export", "ok" if proc.returncode == 130 and not left and
                    "Traceback" not in rest else "FAILED", f"exit {proc.returncode}, left: {left or 'nothing'}"))
    return report()


def report() -> int:
    width = max(len(name) for name, _, _ in results)
    print("\nuser stage results:")
    for name, outcome, detail in results:
        print(f"  {name:<{width}}  {outcome:<6}  {detail}")
    failed = [name for name, outcome, _ in results if outcome != "ok"]
    print(f"user stage: {len(results) - len(failed)}/{len(results)} passed" + (f"; FAILED: {failed}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
