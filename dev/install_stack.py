#!/usr/bin/env python3
"""Install prune_hooks with the real Detectron2 + MMDetection stack into a virtual environment.

    python3 dev/install_stack.py [--venv .venv] [--no-mmdet] [--no-detectron2]

What it installs (pinned in dev/constraints.txt):

* torch 2.14.1 + torchvision 0.29.1 (CUDA builds: they run on CPU, and are the only torchvision wheels
  whose compiled ops match an available torch), setuptools < 81 (pkg_resources is still needed);
* mmengine 0.10.7, mmcv 2.1.0 built from its sdist WITH ops (compiled as C++20 through
  ``dev/cxx20``, sources untouched), mmdet 3.3.0;
* detectron2: ``$DETECTRON2_SOURCE`` (a git URL or a local checkout of the official repository) when
  set, otherwise the PyPI sdist ``pb1-detectron2==0.6`` (the official v0.6 sources) built python-only;
* prune_hooks itself, editable, with the ``dev``, ``mmdet`` and ``detectron2`` extras.

Running it again when everything is in place takes about a second: it reads installed package
metadata and only runs the steps that are missing. Built wheels (mmcv, detectron2) are cached, so a
rebuilt environment on the same machine does not compile again.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONSTRAINTS = ROOT / "dev" / "constraints.txt"
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "prune_hooks"

D2_SDIST_URL = (
    "https://files.pythonhosted.org/packages/60/26/48f5bbb7ee492696a21da23303daeecdfe3942c498a70d34108acf63b2bd/"
    "pb1-detectron2-0.6.tar.gz"
)
D2_SDIST_SHA256 = "5d2e9e51e523ec72f6a31cca04b0a515492e9514b773a3d134cedc0677170b29"
# Bump when the packaging patch below changes, so a cached wheel from an older patch is not reused.
D2_PATCH_REV = "2"
D2_LOCAL_VERSION = "+pyonly"

# (distribution, exact version or None for "any") checked without importing anything.
TORCH = [("torch", "2.14.1"), ("torchvision", "0.29.1")]
MMDET = [("mmengine", "0.10.7"), ("mmcv", "2.1.0"), ("mmdet", "3.3.0")]


def log(msg: str) -> None:
    print(f"[install_stack] {msg}", flush=True)


def run(cmd: list[str], env: dict[str, str] | None = None, cwd: Path | None = None) -> None:
    log("$ " + " ".join(str(c) for c in cmd))
    subprocess.run([str(c) for c in cmd], check=True, env=env, cwd=cwd)


def probe(python: Path) -> dict[str, object]:
    """Installed versions and facts, read from package metadata in the venv (no heavy imports)."""
    code = r"""
import json, importlib.metadata as md
out = {}
for name in ["torch", "torchvision", "setuptools", "mmengine", "mmcv", "mmdet", "detectron2",
             "pb1-detectron2", "prune-hooks", "pytest", "ruff", "ultralytics", "hypothesis"]:
    try:
        out[name] = md.version(name)
    except md.PackageNotFoundError:
        out[name] = None
try:
    out["mmcv_ops"] = any("_ext" in str(f) for f in (md.files("mmcv") or []))
except md.PackageNotFoundError:
    out["mmcv_ops"] = False
try:
    d = md.distribution("prune-hooks")
    url = d.read_text("direct_url.json") or ""
    out["prune_hooks_editable"] = '"editable": true' in url
except md.PackageNotFoundError:
    out["prune_hooks_editable"] = False
print(json.dumps(out))
"""
    res = subprocess.run([str(python), "-c", code], check=True, capture_output=True, text=True)
    import json

    return json.loads(res.stdout)


def pip(python: Path, *args: str, env: dict[str, str] | None = None) -> None:
    run([str(python), "-m", "pip", "install", "-c", str(CONSTRAINTS), *args], env=env)


def setuptools_ok(version: str | None) -> bool:
    if version is None:
        return False
    major, minor = (int(x) for x in version.split(".")[:2])
    return (major, minor) >= (77, 0) and major < 81


def install_torch(python: Path) -> None:
    pip(python, "torch==2.14.1", "torchvision==0.29.1", "setuptools>=77.0.3,<81", "wheel", "ninja")


def install_mmcv(python: Path) -> None:
    env = dict(os.environ)
    env.update(
        MMCV_WITH_OPS="1",
        FORCE_CUDA="0",
        MAX_JOBS=str(os.cpu_count() or 2),
        CXX=str(ROOT / "dev" / "cxx20"),
        PRUNE_HOOKS_REAL_CXX=env.get("CXX", "g++"),
    )
    # Ensure the C++ build really gets our wrapper: torch.utils.cpp_extension writes $CXX into the
    # ninja file, and only uses ninja when it is importable.
    log("building mmcv 2.1.0 with ops (about 15 min on 2 cores the first time; pip caches the wheel)")
    pip(python, "--no-build-isolation", "mmcv==2.1.0", env=env)


def patch_detectron2_sdist(src: Path) -> None:
    """Make the v0.6 sdist build as a python-only package; each fix is asserted to apply once."""
    setup_py = src / "setup.py"
    text = setup_py.read_text()
    fixes = [
        # 1. The sdist ships no layers/csrc: build no extension when its entry point is missing.
        (
            '    main_source = path.join(extensions_dir, "vision.cpp")\n',
            '    main_source = path.join(extensions_dir, "vision.cpp")\n'
            "    if not path.exists(main_source):\n"
            "        return []\n",
        ),
        # 2. The sdist has no top-level configs/: collect the model-zoo yamls where they really are.
        (
            '    config_paths = glob.glob("configs/**/*.yaml", recursive=True) + glob.glob(\n'
            '        "configs/**/*.py", recursive=True\n'
            "    )\n",
            '    zoo = path.join("detectron2", "model_zoo")\n'
            "    config_paths = [\n"
            "        path.relpath(p, zoo)\n"
            '        for ext in ("yaml", "py")\n'
            '        for p in glob.glob(path.join(zoo, "configs", "**", "*." + ext), recursive=True)\n'
            "    ]\n",
        ),
        # 3. An unused extra with a direct-URL dependency makes recent pip refuse the package.
        (
            '            "panopticapi @ https://github.com/cocodataset/panopticapi/archive/master.zip",\n',
            "",
        ),
        # 4. Install under the official distribution name, so `pip show detectron2` and requirements work.
        ('    name="pb1-detectron2",\n', '    name="detectron2",\n'),
    ]
    for old, new in fixes:
        if text.count(old) != 1:
            raise SystemExit(f"[install_stack] detectron2 setup.py patch does not apply: {old.strip()[:60]!r}")
        text = text.replace(old, new)
    setup_py.write_text(text)
    # 5. Modules that do `from detectron2 import _C` at import time get a stub that fails clearly on use.
    (src / "detectron2" / "_C.py").write_text(
        '"""Stub for detectron2\'s C++/CUDA extension, absent from this python-only build.\n\n'
        "Rotated boxes, deformable convolution and the fast COCO evaluator need it. Build detectron2\n"
        "from the official sources (DETECTRON2_SOURCE=... dev/install_stack.py) to get them.\n"
        '"""\n\n\n'
        "# What detectron2.utils.collect_env asks of the extension when it prints the environment.\n"
        "def get_compiler_version():\n"
        "    return 'none (python-only build)'\n\n\n"
        "def get_cuda_version():\n"
        "    return 'none (python-only build)'\n\n\n"
        "def has_cuda():\n"
        "    return False\n\n\n"
        "def __getattr__(name):\n"
        "    if name.startswith('__'):\n"
        "        raise AttributeError(name)\n"
        "    raise NotImplementedError(\n"
        "        f'detectron2._C.{name} is not available: this detectron2 was built without its C++ '\n"
        "        'extension (python-only build). Use COCOEvaluator(..., use_fast_impl=False); rotated '\n"
        "        'boxes and deformable convolution need detectron2 built from source.'\n"
        "    )\n"
    )


def build_detectron2_pyonly(python: Path) -> Path:
    """Return a wheel of detectron2 v0.6 built python-only from the pinned PyPI sdist (cached)."""
    wheel_dir = CACHE / f"detectron2-{D2_SDIST_SHA256[:12]}-p{D2_PATCH_REV}"
    wheels = sorted(wheel_dir.glob("detectron2-*.whl")) if wheel_dir.exists() else []
    if wheels:
        return wheels[-1]
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        sdist = tmp_path / "pb1-detectron2-0.6.tar.gz"
        log(f"downloading {D2_SDIST_URL}")
        with urllib.request.urlopen(D2_SDIST_URL, timeout=180) as resp, open(sdist, "wb") as f:
            shutil.copyfileobj(resp, f)
        digest = hashlib.sha256(sdist.read_bytes()).hexdigest()
        if digest != D2_SDIST_SHA256:
            raise SystemExit(f"[install_stack] sha256 of {sdist.name} is {digest}, expected {D2_SDIST_SHA256}")
        with tarfile.open(sdist) as tar:
            tar.extractall(tmp_path, filter="data")
        src = tmp_path / "pb1-detectron2-0.6"
        patch_detectron2_sdist(src)
        out = tmp_path / "wheels"
        env = dict(os.environ, D2_VERSION_SUFFIX=D2_LOCAL_VERSION)
        run([str(python), "-m", "pip", "wheel", "--no-build-isolation", "--no-deps", "-w", str(out), str(src)], env=env)
        wheel_dir.mkdir(parents=True, exist_ok=True)
        (built,) = out.glob("detectron2-*.whl")
        shutil.copy2(built, wheel_dir / built.name)
        return wheel_dir / built.name


def install_detectron2(python: Path) -> None:
    source = os.environ.get("DETECTRON2_SOURCE")
    if source:
        target = source if "://" in source or source.startswith("git+") else str(Path(source).resolve())
        if "://" in target and not target.startswith("git+"):
            target = "git+" + target
        log(f"building detectron2 from DETECTRON2_SOURCE={source}")
        pip(python, "--no-build-isolation", target)
        return
    pip(python, str(build_detectron2_pyonly(python)))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--venv", default=str(ROOT / ".venv"), help="virtual environment to create or update")
    ap.add_argument("--no-mmdet", action="store_true", help="skip mmengine/mmcv/mmdet")
    ap.add_argument("--no-detectron2", action="store_true", help="skip detectron2")
    args = ap.parse_args(argv)

    start = time.time()
    venv = Path(args.venv).resolve()
    python = venv / "bin" / "python"
    if not python.exists():
        log(f"creating virtual environment {venv}")
        run([sys.executable, "-m", "venv", str(venv)])
    # Build steps below must find ninja and the venv's tools first.
    os.environ["PATH"] = f"{venv / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}"

    have = probe(python)
    if (have["torch"], have["torchvision"]) != ("2.14.1", "0.29.1") or not setuptools_ok(have["setuptools"]):
        install_torch(python)
    if not args.no_mmdet and not (have["mmcv"] == "2.1.0" and have["mmcv_ops"]):
        install_mmcv(python)
    d2_wanted = not args.no_detectron2
    if d2_wanted and have["detectron2"] is None:
        install_detectron2(python)
    extras = ["dev", "ultralytics"] + ([] if args.no_mmdet else ["mmdet"])
    extras += [] if args.no_detectron2 else ["detectron2"]
    mm_ok = args.no_mmdet or all(have[n] == v for n, v in MMDET)
    tools = ("pytest", "ruff", "ultralytics", "hypothesis")
    if not (have["prune_hooks_editable"] and all(have[t] for t in tools) and mm_ok):
        pip(python, "-e", f"{ROOT}[{','.join(extras)}]")

    have = probe(python)
    missing = [n for n, v in TORCH + ([] if args.no_mmdet else MMDET) if have[n] != v]
    if d2_wanted and have["detectron2"] is None:
        missing.append("detectron2")
    if missing:
        raise SystemExit(f"[install_stack] still missing after install: {missing}")
    log(
        f"ready in {time.time() - start:.0f}s: torch {have['torch']}, torchvision {have['torchvision']}, "
        f"mmcv {have['mmcv']} (ops: {have['mmcv_ops']}), mmdet {have['mmdet']}, detectron2 {have['detectron2']}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
