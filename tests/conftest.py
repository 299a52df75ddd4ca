"""Shared test set-up: 8 simulated CPU devices, so sharding tests run anywhere."""
import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import hashlib  # noqa: E402
import pathlib  # noqa: E402
import shutil  # noqa: E402

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory) -> pathlib.Path:
    """A 2-layer random BERT in HF format with the real MiniLM tokenizer files beside it."""
    transformers = pytest.importorskip("transformers")
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)  # the same weights in every session, whichever tests ran before
    folder = tmp_path_factory.mktemp("tiny_bert")
    config = transformers.BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2,
                                     num_attention_heads=2, intermediate_size=64, max_position_embeddings=64)
    transformers.BertModel(config).save_pretrained(folder)
    from w2s.models import resolve_model_dir

    minilm = resolve_model_dir("minilm")
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        shutil.copy(minilm / name, folder / name)
    return folder


@pytest.fixture(scope="session")
def offline_model():
    """name -> the converted folder of an offline model (w2s/models/sources.py), fetched into the
    user's cache ($W2S_MODELS) on first use, so later sessions and CI runs on the machine reuse it."""
    import functools

    from w2s.models import sources

    return functools.cache(sources.fetch)


def _sha256(path: pathlib.Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 24):
            digest.update(chunk)
    return digest.hexdigest()


@pytest.fixture(scope="session")
def original_checkpoint():
    """name -> the model's original file (GGUF, ONNX): references such as transformers' GGUF loader
    read it, never the run-time code. Downloaded, joined and checked once into the user's cache
    ($W2S_ORIGINALS, else ~/.cache/w2s/originals: ~1 GB that CI would otherwise fetch every session),
    and its SHA-256 checked again on each session's first use."""
    import functools
    import tempfile

    from w2s.models import sources

    root = pathlib.Path(os.environ.get("W2S_ORIGINALS") or "~/.cache/w2s/originals").expanduser()

    @functools.cache
    def original(name: str) -> pathlib.Path:
        source = sources.SOURCES[name]
        kept = root / name / f"{name}.{source.format}"
        if kept.is_file() and _sha256(kept) == source.sha256:
            return kept
        kept.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=f".{name}.", dir=root) as work:
            joined, _ = sources.download(name, pathlib.Path(work))  # refuses a file of another hash
            joined.replace(kept)  # a rename within one file system: never seen half-written
        return kept

    return original


@pytest.fixture(scope="session")
def gguf_reference(original_checkpoint):
    """name -> transformers' causal LM read from the original GGUF file itself (float32, eval mode):
    the reference of the real-checkpoint parity tests, read once a session however many tests
    compare with it. Only the last one read stays in memory (float32 Qwen2.5-0.5B alone is 2.5 GB):
    the tests of one model run next to each other (test_gemma3 ends with Gemma, test_sources
    groups its tests by model and starts with Gemma)."""
    import functools

    transformers = pytest.importorskip("transformers")
    torch = pytest.importorskip("torch")

    @functools.lru_cache(maxsize=1)
    def reference(name: str):
        gguf = original_checkpoint(name)
        return transformers.AutoModelForCausalLM.from_pretrained(
            gguf.parent, gguf_file=gguf.name, dtype=torch.float32).eval()

    return reference
