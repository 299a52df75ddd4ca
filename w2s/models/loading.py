"""Hugging Face checkpoints onto our backbones, without torch.

Reads config.json plus model.safetensors (single or sharded) or a torch-zip pytorch_model.bin,
maps HF tensor names onto our NNX parameter paths and fills an abstract model, so the random
init of a large model is never materialised.
"""
from __future__ import annotations

import collections
import collections.abc
import json
import pathlib
import pickle
import re
import zipfile
from typing import Any, Callable, Iterator

import jax
import ml_dtypes
import numpy as np
from flax import nnx
from safetensors import safe_open

from w2s.models.config import TransformerConfig
from w2s.models.family import family_of

_INDEXES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
_SINGLES = ("model.safetensors", "pytorch_model.bin")
# Heads of task models (GPT-NeoX calls its LM head embed_out) and non-parameter buffers of older
# checkpoints: not part of a backbone.
_IGNORED = re.compile(
    r"^(pooler|cls|lm_head|embed_out|score|classifier|qa_outputs)\."
    r"|(^|\.)(position_ids|attn\.bias|attn\.masked_bias|attention\.bias|attention\.masked_bias"
    r"|rotary_emb\.inv_freq)$"
)
_LAYER = re.compile(r"^(?:encoder\.layer|h|layers)\.(\d+)\.")

Path = tuple[Any, ...]
# Our parameter path -> (HF tensor name, how to turn that tensor into our array).
NameMap = dict[Path, tuple[str, Callable[[np.ndarray], np.ndarray]]]


def read_hf_config(folder: str | pathlib.Path) -> dict[str, Any]:
    path = pathlib.Path(folder) / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"no HF config: {path} does not exist")
    return json.loads(path.read_text())


class CheckpointTensors(collections.abc.Mapping):
    """A checkpoint folder's tensors as numpy arrays, keyed by their HF names, each read from disk
    only when asked for: a backbone cut to its first layers never reads the others. A safetensors
    file is read tensor by tensor; a torch .bin file whole, on first use."""

    def __init__(self, files: dict[str, pathlib.Path], bins: dict[pathlib.Path, dict[str, np.ndarray]] | None = None):
        self._files = files  # HF name -> the file holding it
        self._bins = bins or {}  # torch .bin files already read whole

    def __getitem__(self, name: str) -> np.ndarray:
        path = self._files[name]
        if path.suffix != ".safetensors":
            if path not in self._bins:
                self._bins[path] = read_torch_bin(path)
            return self._bins[path][name]
        with safe_open(path, framework="numpy") as f:
            return f.get_tensor(name)

    def __iter__(self) -> Iterator[str]:
        return iter(self._files)

    def __len__(self) -> int:
        return len(self._files)


def read_checkpoint(folder: str | pathlib.Path) -> CheckpointTensors:
    """The tensors of a checkpoint folder (single file or sharded with an index), read lazily."""
    folder = pathlib.Path(folder)
    for name in _INDEXES:
        if (folder / name).is_file():
            weight_map = json.loads((folder / name).read_text())["weight_map"]
            return CheckpointTensors({k: folder / shard for k, shard in weight_map.items()})
    for name in _SINGLES:
        if (folder / name).is_file():
            path = folder / name
            if path.suffix != ".safetensors":
                whole = read_torch_bin(path)
                return CheckpointTensors(dict.fromkeys(whole, path), {path: whole})
            with safe_open(path, framework="numpy") as f:
                return CheckpointTensors(dict.fromkeys(f.keys(), path))
    looked = ", ".join(str(folder / n) for n in _INDEXES + _SINGLES)
    raise FileNotFoundError(f"no checkpoint in {folder}: looked for {looked}")


_TORCH_DTYPES = {
    "FloatStorage": np.dtype(np.float32),
    "HalfStorage": np.dtype(np.float16),
    "BFloat16Storage": np.dtype(ml_dtypes.bfloat16),
    "LongStorage": np.dtype(np.int64),
}


def _rebuild_tensor(storage: np.ndarray, offset: int, size: tuple, stride: tuple, *_) -> np.ndarray:
    """numpy stand-in for torch._utils._rebuild_tensor_v2 (strides count elements)."""
    strides = tuple(s * storage.itemsize for s in stride)
    return np.lib.stride_tricks.as_strided(storage[offset:], shape=size, strides=strides).copy()


class _TorchUnpickler(pickle.Unpickler):
    """Rebuilds a torch state dict as numpy arrays; refuses every other global, so no code runs."""

    def __init__(self, archive: zipfile.ZipFile, root: str):
        super().__init__(archive.open(f"{root}/data.pkl"))
        self.archive, self.root = archive, root
        self.storages: dict[str, np.ndarray] = {}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if module == "torch" and name.endswith("Storage"):
            if name not in _TORCH_DTYPES:
                supported = ", ".join(sorted(_TORCH_DTYPES))
                raise ValueError(f"unsupported tensor type torch.{name}; supported: {supported}")
            return _TORCH_DTYPES[name]
        raise pickle.UnpicklingError(f"refusing to unpickle {module}.{name} from a checkpoint")

    def persistent_load(self, pid: tuple) -> np.ndarray:
        _, dtype, key, _, numel = pid  # ('storage', dtype, key, location, numel)
        if key not in self.storages:
            data = self.archive.read(f"{self.root}/data/{key}")
            self.storages[key] = np.frombuffer(data, dtype=dtype, count=numel)
        return self.storages[key]


def read_torch_bin(path: str | pathlib.Path) -> dict[str, np.ndarray]:
    """A pytorch_model.bin (torch zip format) as numpy arrays."""
    with zipfile.ZipFile(path) as archive:
        root = archive.namelist()[0].split("/")[0]
        byteorder = f"{root}/byteorder"
        if byteorder in archive.namelist() and archive.read(byteorder) != b"little":
            raise ValueError(f"{path}: big-endian torch checkpoints are not supported")
        return dict(_TorchUnpickler(archive, root).load())


def unchanged(x: np.ndarray) -> np.ndarray:
    return x


def linear_names(ours: Path, hf: str, *, bias: bool = True, transpose: bool = True) -> NameMap:
    """torch Linear stores [out, in]; GPT-2's Conv1D already stores [in, out]."""
    m: NameMap = {ours + ("kernel",): (f"{hf}.weight", np.transpose if transpose else unchanged)}
    if bias:
        m[ours + ("bias",)] = (f"{hf}.bias", unchanged)
    return m


def norm_names(ours: Path, hf: str, *, bias: bool = True) -> NameMap:
    m: NameMap = {ours + ("scale",): (f"{hf}.weight", unchanged)}
    if bias:
        m[ours + ("bias",)] = (f"{hf}.bias", unchanged)
    return m


def _strip_prefix(name: str, prefixes: tuple[str, ...]) -> str:
    for prefix in prefixes:
        if name.startswith(prefix):
            return name[len(prefix):]
    return name


def load_pretrained(
    abstract: nnx.Module, folder: str | pathlib.Path, *, lm_head: bool = False
) -> nnx.Module:
    """Fills an abstract backbone (from nnx.eval_shape) with the checkpoint in `folder`.

    Checkpoint layers beyond the backbone's num_layers are skipped (truncation); heads and
    buffers are ignored. Every parameter must be found, and every other backbone tensor used.
    lm_head=True fills a CausalLM instead: its backbone, and its lm_head unless that is tied to
    the token embedding.
    """
    cfg: TransformerConfig = abstract.cfg
    family = family_of(cfg)
    checkpoint = read_checkpoint(folder)
    hf_name = {_strip_prefix(k, family.prefixes): k for k in checkpoint}  # without a task wrapper's prefix
    names = family.checkpoint_names(cfg)
    if lm_head:
        names = {("backbone",) + path: name for path, name in names.items()}
        if not cfg.tie_embeddings:
            names |= linear_names(("lm_head",), family.lm_head, bias=False)
    graphdef, state = nnx.split(abstract)
    flat = list(nnx.to_flat_state(state))

    missing = sorted({hf for hf, _ in names.values() if hf not in hf_name})
    used = {hf for hf, _ in names.values()}
    unexpected = sorted(
        k
        for k in hf_name
        if k not in used
        and not _IGNORED.search(k)
        and not ((layer := _LAYER.match(k)) and int(layer.group(1)) >= cfg.num_layers)
    )
    if missing or unexpected:
        raise ValueError(
            f"checkpoint in {folder} does not fit the {cfg.arch} backbone: "
            f"missing {missing or 'nothing'}; unexpected {unexpected or 'nothing'}"
        )

    filled = []
    for path, var in flat:
        hf, convert = names[path]
        want = var.get_value()
        array = np.asarray(convert(checkpoint[hf_name[hf]]))
        if array.shape != want.shape:
            ours = "/".join(map(str, path))
            raise ValueError(f"{hf}: shape {array.shape} does not fit {ours} {want.shape}")
        # device_put, not jnp.asarray: that compiles a small program for every new shape.
        filled.append((path, var.replace(jax.device_put(array.astype(want.dtype, copy=False)))))
    return nnx.merge(graphdef, nnx.from_flat_state(filled))
