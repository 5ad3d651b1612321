"""Model structure: official parameter counts, variants, positions, init."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx

from amd_jax import errors, masking
from amd_jax import tokens as tokens_lib
from amd_jax.models import decoders, heads, posemb, pretrain, vit

V = vit.decode_variant


def count(module):
  return sum(x.size for x in jax.tree.leaves(nnx.state(module, nnx.Param)))


def serial(layers=(6, 12)):
  return ml_collections.ConfigDict(dict(method="serial", student_layers=layers,
                                        generator_depth=2, learnable_mask_tokens=False))


@pytest.mark.parametrize("variant, classes, expected", [
    ("S/16x2", 174, 21_946_926),    # ViT-S fine-tuned on SSV2
    ("S/16x2", 400, 22_033_936),    # ViT-S fine-tuned on K400
    ("B/16x2", 400, 86_534_800),    # ViT-B K400 (n_parameters in VideoMAE logs)
    ("B/16x2", 174, 86_361_006),
])
def test_classifier_parameter_counts(variant, classes, expected):
  model = nnx.eval_shape(lambda: heads.Classifier(V(variant), classes, num_frames=16,
                                                  image_size=224, rngs=nnx.Rngs(0)))
  assert count(model) == expected


def test_vit_l_encoder_parameter_count():
  model = nnx.eval_shape(lambda: vit.Encoder(V("L/16x2"), num_frames=16, image_size=224,
                                             final_norm=False, rngs=nnx.Rngs(0)))
  assert count(model) == 303_858_688


@pytest.mark.parametrize("student, millions", [("B/16x2", 146.2), ("S/16x2", 75.2)])
def test_amd_trainable_parameter_count(student, millions):
  """Teacher excluded; frozen generator mask tokens are not parameters (as officially)."""
  model = nnx.eval_shape(lambda: pretrain.Pretrainer(
      V(student), num_frames=16, image_size=224, decoder_depth=4, align=serial(),
      teacher_variant=V("L/16x2"), rngs=nnx.Rngs(0)))
  assert round(count(model) / 1e5) / 10 == millions
  frozen = jax.tree.leaves(nnx.state(model, decoders.FrozenToken))
  assert [x.shape for x in frozen] == [(1024,), (1024,)]


def test_variants():
  b = V("B/16x2")
  assert (b.width, b.depth, b.heads, b.mlp_dim, b.patch, b.tubelet) == (768, 12, 12, 3072, 16, 2)
  assert (b.decoder_width, b.decoder_heads) == (384, 6)
  assert V("S/16").tubelet == 1
  assert (V("H/16x2").width, V("H/16x2").depth, V("H/16x2").decoder_heads) == (1280, 32, 8)
  for bad in ("X/16x2", "B16", "B/16x"):
    with pytest.raises(errors.BadInput, match="variant"):
      V(bad)


def test_sinusoid_table_interleaved():
  table = posemb.sinusoid_table(5, 6)
  p, j = 3, 4
  angle = p / 10000 ** (2 * (j // 2) / 6)
  assert np.isclose(table[p, j], np.sin(angle)) and np.isclose(table[p, j + 1], np.cos(angle))
  assert np.allclose(table[0, 0::2], 0) and np.allclose(table[0, 1::2], 1)


def test_patchify_order():
  """Tokens (t, h, w) with w fastest; inside a tubelet (kt, kh, kw, c), channel fastest."""
  video = np.arange(1 * 4 * 4 * 6 * 3).reshape(1, 4, 4, 6, 3)
  tokens = np.asarray(tokens_lib.patchify(jnp.asarray(video), patch=2, tubelet=2))
  assert tokens.shape == (1, 2 * 2 * 3, 2 * 2 * 2 * 3)
  t, h, w = 1, 0, 2                      # token index t·6 + h·3 + w
  kt, kh, kw, c = 1, 0, 1, 2             # element (kt·4 + kh·2 + kw)·3 + c
  assert tokens[0, t * 6 + h * 3 + w, (kt * 4 + kh * 2 + kw) * 3 + c] == \
      video[0, t * 2 + kt, h * 2 + kh, w * 2 + kw, c]


def test_initialisation_follows_the_official_code():
  model = pretrain.Pretrainer(V("S/16x2"), num_frames=4, image_size=64, decoder_depth=1,
                              align=serial((2, 4)), teacher_variant=V("B/16x2"),
                              rngs=nnx.Rngs(0))
  block = model.encoder.blocks.layers[0]
  qkv = np.asarray(block.attn.qkv.kernel[...])
  bound = np.sqrt(6 / (384 + 3 * 384))   # xavier on the fused [D, 3D] matrix
  assert np.abs(qkv).max() <= bound and np.abs(qkv).max() > 0.9 * bound
  assert not np.any(block.attn.q_bias[...]) and not np.any(block.attn.v_bias[...])
  assert np.all(block.norm1.scale[...] == 1) and not np.any(block.norm1.bias[...])
  patch = np.asarray(model.encoder.patch_embed.kernel[...])
  assert np.abs(patch).max() <= 1 / np.sqrt(1536)          # torch default Conv3d init
  e2d = np.asarray(model.decoder.encoder_to_decoder.kernel[...])
  assert np.abs(e2d).max() <= 1 / np.sqrt(384) and np.abs(e2d).max() > 0.9 / np.sqrt(384)
  token = np.asarray(model.decoder.mask_token[...])
  assert np.abs(token).max() <= 0.02 and 0.008 < token.std() < 0.014  # N(0,.02²) cut at ±1σ
  assert model.alignment.projection_heads[0].bias is None


def test_drop_path_rates_and_remat_match():
  enc = vit.Encoder(V("Mu/8x2"), num_frames=4, image_size=16, drop_path=0.3, remat=True,
                    rngs=nnx.Rngs(0))
  rates = [layer.drop_path for layer in enc.blocks.layers]
  np.testing.assert_allclose(rates, np.linspace(0, 0.3, 4))
  video = jax.random.normal(jax.random.key(1), (2, 4, 16, 16, 3))
  plain = vit.Encoder(V("Mu/8x2"), num_frames=4, image_size=16, drop_path=0.3,
                      rngs=nnx.Rngs(0))
  np.testing.assert_allclose(enc(video)[0], plain(video)[0], atol=1e-6)
  x1, _ = enc(video, rng=jax.random.key(2))
  assert not np.allclose(x1, enc(video)[0])   # an rng turns stochastic depth on


@pytest.mark.parametrize("remat", [False, True])
def test_encoder_attention_probs_are_the_softmax_of_its_scores(remat):
  """Encoder.attention_probs against softmax(q·kᵀ/√d) computed here from each block's
  weights on its input (the embedding, then the previous block's output), with
  random q/v biases; asking for them leaves the encoder's outputs as they were."""
  encoder = vit.Encoder(V("Mu/8x2"), num_frames=4, image_size=16, remat=remat,
                        rngs=nnx.Rngs(0))
  width, heads_, head_dim = 64, 2, 32
  keys = jax.random.split(jax.random.key(1), 2 * len(encoder.blocks.layers))
  for layer, k1, k2 in zip(encoder.blocks.layers, keys[::2], keys[1::2]):
    layer.attn.q_bias[...] = jax.random.normal(k1, (width,))
    layer.attn.v_bias[...] = jax.random.normal(k2, (width,))
  video = jax.random.normal(jax.random.key(2), (2, 4, 16, 16, 3))
  x, hidden = encoder(video)
  probs = nnx.jit(lambda e, v: e.attention_probs(v))(encoder, video)
  assert len(probs) == 4
  inputs = (encoder.embed(video),) + hidden[:-1]
  for layer, h, p in zip(encoder.blocks.layers, inputs, probs):
    assert p.shape == (2, heads_, 8, 8) and p.dtype == jnp.float32
    np.testing.assert_allclose(p.sum(-1), 1.0, rtol=1e-6)
    n = np.asarray(layer.norm1(h), np.float64)
    w = np.asarray(layer.attn.qkv.kernel[...], np.float64)
    q = (n @ w[:, :width] + np.asarray(layer.attn.q_bias[...])).reshape(2, 8, heads_, head_dim)
    k = (n @ w[:, width:2 * width]).reshape(2, 8, heads_, head_dim)
    scores = np.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(head_dim)
    want = np.exp(scores - scores.max(-1, keepdims=True))
    np.testing.assert_allclose(p, want / want.sum(-1, keepdims=True), atol=1e-5)
  (x_asked, hidden_asked), _ = nnx.capture(encoder, nnx.Intermediate)(video,
                                                                       attention_probs=True)
  np.testing.assert_allclose(x_asked, x, atol=1e-5)
  for a, b in zip(hidden_asked, hidden):
    np.testing.assert_allclose(a, b, atol=1e-5)


def test_a_model_takes_a_clip_of_another_size():
  """Built for 8×64×64, called on 4×32×48: the same as the model built for that clip."""
  small = dict(num_classes=5, drop_path=0.0, head_dropout=0.0, init_scale=0.001)
  built = heads.Classifier(vit.decode_variant("Mu/8x2"), num_frames=8, image_size=64,
                           rngs=nnx.Rngs(0), **small)
  native = heads.Classifier(vit.decode_variant("Mu/8x2"), num_frames=4, image_size=(32, 48),
                            rngs=nnx.Rngs(0), **small)
  built.eval()
  native.eval()
  video = jax.random.normal(jax.random.key(1), (2, 4, 32, 48, 3))
  np.testing.assert_allclose(nnx.jit(lambda m, v: m(v))(built, video), native(video), atol=1e-6)
  with pytest.raises(errors.BadInput, match="not divisible into 2×8×8 tubelets"):
    built(video[:, :3])


def test_a_pretrainer_takes_a_clip_of_another_size():
  """An AMD pre-training model built for 4×32×32 (32 tokens), called on 8×48×40 (120):
  its pixel decoder and generators use that clip's position table as its encoder does,
  so it computes what the model built for that clip computes with the same weights
  (the tables are not parameters)."""
  align = ml_collections.ConfigDict(dict(method="serial", student_layers=(2, 4),
                                         generator_depth=1, learnable_mask_tokens=False))
  kw = dict(decoder_depth=1, align=align, teacher_variant=V("Ti/8x2"))
  built = pretrain.Pretrainer(V("Mu/8x2"), num_frames=4, image_size=32, rngs=nnx.Rngs(0), **kw)
  native = pretrain.Pretrainer(V("Mu/8x2"), num_frames=8, image_size=(48, 40),
                               rngs=nnx.Rngs(1), **kw)
  nnx.update(native, nnx.state(built))
  grid = (4, 6, 5)
  rng = np.random.default_rng(0)
  codes = np.stack([masking.tube_mask(rng, grid, 0.75, 0.5) for _ in range(2)])
  counts = masking.tube_counts(grid, 0.75, 0.5)
  idx = masking.indices(jnp.asarray(codes), counts)
  video = jax.random.normal(jax.random.key(2), (2, 8, 48, 40, 3))
  forward = nnx.jit(lambda m: m(video, idx))
  got, want = forward(built), forward(native)
  assert got["pred"].shape == (2, counts.masked, 2 * 8 * 8 * 3)
  assert [x.shape for x in got["direct"]] == [(2, counts.student, 192)] * 2
  assert [x.shape for x in got["generated"]] == [(2, counts.diff, 192)] * 2
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
    np.testing.assert_allclose(a, b, atol=1e-6)
