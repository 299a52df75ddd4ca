"""Backbones against transformers' PyTorch models on tiny random checkpoints, plus the registry."""
from __future__ import annotations

import json
import logging

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest
import torch
import transformers
from flax import nnx
from safetensors.numpy import load_file, save_file

from w2s.models import (
    Classifier,
    TransformerConfig,
    build_backbone,
    build_classifier,
    known_models,
    resolve_model_dir,
)
from w2s.models import loading
from w2s.models.loading import read_checkpoint, read_torch_bin

VOCAB = 100
TINY = {
    "bert": lambda n: transformers.BertConfig(
        vocab_size=VOCAB, hidden_size=32, num_hidden_layers=n, num_attention_heads=4,
        intermediate_size=64, max_position_embeddings=32,
    ),
    "gpt2": lambda n: transformers.GPT2Config(
        vocab_size=VOCAB, n_embd=32, n_layer=n, n_head=4, n_positions=32, bos_token_id=0, eos_token_id=0,
    ),
    "llama": lambda n: transformers.LlamaConfig(
        vocab_size=VOCAB, hidden_size=32, num_hidden_layers=n, num_attention_heads=4,
        num_key_value_heads=2, intermediate_size=64, max_position_embeddings=32, bos_token_id=0,
        eos_token_id=0,
    ),
    "qwen2": lambda n: transformers.Qwen2Config(
        vocab_size=VOCAB, hidden_size=32, num_hidden_layers=n, num_attention_heads=4,
        num_key_value_heads=2, intermediate_size=64, max_position_embeddings=32, bos_token_id=0,
        eos_token_id=0,
    ),
}
# Right-padded batch: lengths 7, 4 and 1.
IDS = np.array([[5, 17, 42, 8, 99, 3, 61], [12, 7, 7, 30, 0, 0, 0], [44, 0, 0, 0, 0, 0, 0]], np.int32)
MASK = (np.arange(7)[None] < np.array([[7], [4], [1]])).astype(np.int32)


def _tiny_model(arch: str, num_layers: int = 2) -> torch.nn.Module:
    torch.manual_seed(0)
    model = transformers.AutoModel.from_config(TINY[arch](num_layers)).eval()
    with torch.no_grad():  # HF's std 0.02 init is nearly the identity; wider weights test more.
        for p in model.parameters():
            p.normal_(0.0, 0.3)
    return model


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """arch -> (saved folder, torch model)."""
    out = {}
    for arch in TINY:
        model = _tiny_model(arch)
        folder = tmp_path_factory.mktemp(arch)
        model.save_pretrained(folder)
        out[arch] = (folder, model)
    return out


def _torch_hidden(model: torch.nn.Module, ids=IDS, mask=MASK) -> np.ndarray:
    with torch.no_grad():
        out = model(input_ids=torch.tensor(ids, dtype=torch.long), attention_mask=torch.tensor(mask))
    return out.last_hidden_state.numpy()


def _ours(backbone, ids=IDS, mask=MASK) -> np.ndarray:
    return np.asarray(backbone(jnp.asarray(ids), jnp.asarray(mask)))


def _max_diff_real(a: np.ndarray, b: np.ndarray, mask=MASK) -> float:
    """Padded query rows hold garbage in both implementations: compare real positions only."""
    return float(np.abs(a - b)[mask.astype(bool)].max())


@pytest.mark.parametrize("arch", list(TINY))
def test_matches_transformers(checkpoints, arch):
    folder, model = checkpoints[arch]
    ours = _ours(build_backbone(str(folder)))
    assert _max_diff_real(ours, _torch_hidden(model)) <= 1e-4


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_pytorch_bin_matches_safetensors(checkpoints, tmp_path, arch):
    folder, model = checkpoints[arch]
    model.config.save_pretrained(tmp_path)
    state = model.state_dict()
    if arch == "gpt2":  # old GPT-2 checkpoints also hold the causal-mask buffers
        state["h.0.attn.bias"] = torch.ones(1, 1, 32, 32).tril()
        state["h.0.attn.masked_bias"] = torch.tensor(-1e4)
    torch.save(state, tmp_path / "pytorch_model.bin")
    from_bin = _ours(build_backbone(str(tmp_path)))
    np.testing.assert_array_equal(from_bin, _ours(build_backbone(str(folder))))


@pytest.mark.parametrize(
    "wrapper, arch",
    [
        (transformers.BertForSequenceClassification, "bert"),
        (transformers.GPT2LMHeadModel, "gpt2"),
        (transformers.Qwen2ForCausalLM, "qwen2"),
    ],
)
def test_task_model_checkpoints_load_their_backbone(tmp_path, wrapper, arch):
    """bert./transformer./model. prefixes are stripped; pooler and heads are skipped."""
    torch.manual_seed(0)
    model = wrapper(TINY[arch](2)).eval()
    model.save_pretrained(tmp_path)
    ours = _ours(build_backbone(str(tmp_path)))
    assert _max_diff_real(ours, _torch_hidden(model.base_model)) <= 1e-4


def test_torch_bin_dtypes_and_views(tmp_path):
    base = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    tensors = {
        "f32": base,
        "f16": base.half(),
        "bf16": base.bfloat16() / 3,
        "i64": torch.arange(5),
        "transposed": base.t(),  # strided view of a shared storage
        "row": base[1],  # offset into the same storage
    }
    torch.save(tensors, tmp_path / "x.bin")
    got = read_torch_bin(tmp_path / "x.bin")
    assert got["bf16"].dtype == ml_dtypes.bfloat16 and got["f16"].dtype == np.float16
    for k, t in tensors.items():
        np.testing.assert_array_equal(got[k].astype(np.float32), t.float().numpy())
    torch.save({"f64": base.double()}, tmp_path / "y.bin")
    with pytest.raises(ValueError, match="DoubleStorage"):
        read_torch_bin(tmp_path / "y.bin")


def test_truncated_backbone_reads_only_its_tensors(checkpoints, monkeypatch):
    """Layers past num_layers are never read from disk (a sweep's small rungs of a big checkpoint)."""
    folder, _ = checkpoints["gpt2"]
    read = []
    real = loading.CheckpointTensors.__getitem__
    monkeypatch.setattr(loading.CheckpointTensors, "__getitem__", lambda self, k: read.append(k) or real(self, k))
    build_backbone(str(folder), num_layers=1)
    assert read and all(".1." not in name for name in read)
    assert any(name.startswith("h.0.") for name in read)


@pytest.mark.parametrize("arch", ["bert", "llama"])
def test_pretrained_classifier_builds_without_compiling(checkpoints, arch, caplog):
    """Weights and the zero head are placed from host memory: a fresh process's first build compiles
    no small eager programs (jnp.asarray or nnx's initializers would compile one per shape)."""
    jax.clear_caches()  # so shapes an earlier test compiled cannot hide a compile here
    with jax.log_compiles(), caplog.at_level(logging.WARNING):
        clf = Classifier(build_backbone(str(checkpoints[arch][0])), "last")
    assert not [r.getMessage() for r in caplog.records if "Compiling" in r.getMessage()]
    assert np.all(np.asarray(clf.head.kernel[...]) == 0) and clf.head.kernel[...].dtype == jnp.float32


@pytest.mark.parametrize("arch, k", [("bert", 0), ("gpt2", 1), ("qwen2", 1)])
def test_num_layers_truncation(checkpoints, arch, k):
    folder, model = checkpoints[arch]
    shallow = transformers.AutoModel.from_config(TINY[arch](k)).eval()
    missing, _ = shallow.load_state_dict(model.state_dict(), strict=False)
    assert not missing
    ours = _ours(build_backbone(str(folder), num_layers=k))
    assert _max_diff_real(ours, _torch_hidden(shallow)) <= 1e-4


def test_last_token_pooling_uses_mask_not_pad_id(checkpoints):
    clf = Classifier(build_backbone(str(checkpoints["gpt2"][0])), "last")
    # The pad id (7) is also a real token of the row, and the last real one.
    padded = clf.features(jnp.array([[5, 9, 7, 7, 7]]), jnp.array([[1, 1, 1, 0, 0]]))
    alone = clf.features(jnp.array([[5, 9, 7]]), jnp.array([[1, 1, 1]]))
    np.testing.assert_allclose(padded, alone, atol=1e-5)
    assert padded.dtype == jnp.float32 and padded.shape == (1, 32)


def test_fresh_head_predicts_exactly_even(checkpoints):
    clf = Classifier(build_backbone(str(checkpoints["llama"][0])), "last")
    logits = clf(jnp.asarray(IDS), jnp.asarray(MASK))
    assert logits.dtype == jnp.float32 and logits.shape == (3, 2)
    assert np.all(np.asarray(logits) == 0.0)


def test_bfloat16_compute_stays_close(checkpoints):
    folder, _ = checkpoints["qwen2"]
    full = _ours(build_backbone(str(folder)))
    half = build_backbone(str(folder), dtype=jnp.bfloat16)(jnp.asarray(IDS), jnp.asarray(MASK))
    assert half.dtype == jnp.bfloat16
    assert _max_diff_real(np.asarray(half, np.float32), full) < 0.2


def test_random_init_has_pretrained_shapes(checkpoints):
    folder, _ = checkpoints["gpt2"]
    random = _flat_params(build_backbone(str(folder), pretrained=False, seed=1))
    loaded = _flat_params(build_backbone(str(folder)))
    assert {k: v.shape for k, v in random.items()} == {k: v.shape for k, v in loaded.items()}
    query = random[("layers", 0, "attn", "query", "kernel")]
    assert float(np.std(query)) == pytest.approx(0.02, rel=0.2)
    assert np.all(random[("layers", 0, "attn", "query", "bias")] == 0)
    assert np.all(random[("final_norm", "scale")] == 1)


def _flat_params(module) -> dict[tuple, np.ndarray]:
    return {path: np.asarray(v.get_value()) for path, v in nnx.to_flat_state(nnx.state(module))}


def test_minilm_matches_transformers():
    clf, tokenizer = build_classifier("minilm")
    assert tokenizer.padding_side == "right" and clf.pooling == "first"
    texts = ["a short one", "weak supervisors can teach strong students"]
    batch = tokenizer(texts, padding=True, return_tensors="np")
    ids, mask = batch["input_ids"].astype(np.int32), batch["attention_mask"].astype(np.int32)
    reference = transformers.BertModel.from_pretrained(resolve_model_dir("minilm")).eval()
    ours = _ours(clf.backbone, ids, mask)
    assert _max_diff_real(ours, _torch_hidden(reference, ids, mask), mask) <= 1e-4


def test_checkpoint_mismatch_names_tensors(checkpoints, tmp_path):
    folder, _ = checkpoints["bert"]
    tensors = load_file(folder / "model.safetensors")
    del tensors["encoder.layer.1.output.dense.bias"]
    tensors["encoder.layer.0.attention.extra.weight"] = np.zeros(3, np.float32)
    save_file(tensors, tmp_path / "model.safetensors")
    (tmp_path / "config.json").write_text((folder / "config.json").read_text())
    with pytest.raises(ValueError, match=r"missing.*layer\.1\.output\.dense\.bias.*unexpected.*extra"):
        build_backbone(str(tmp_path))


def test_missing_folder_names_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="absent"):
        build_backbone(str(tmp_path / "absent"))
    with pytest.raises(FileNotFoundError, match="config.json"):
        build_backbone(str(tmp_path))
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        read_checkpoint(tmp_path)


def test_unknown_name_lists_known_models():
    assert "minilm" in known_models()
    with pytest.raises(ValueError, match="minilm"):
        build_classifier("no-such-model-w2s-test")


def test_unsupported_model_type():
    with pytest.raises(ValueError, match=r"unknown model_type 't5'.*Known model_types: bert, gemma3_text, gpt2, gpt_neox, llama, mpnet, qwen2"):
        TransformerConfig.from_hf(json.loads('{"model_type": "t5"}'))
