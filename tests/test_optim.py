"""Schedule, weight-decay mask and optimiser (docs/method.md#optimisation)."""

import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
from flax import nnx

from amd_jax import optim
from amd_jax.models import pretrain, vit
from configs import pretrain as pretrain_config

# ----------------------------------------------------------------------------- schedule


def _official_cosine(peak, final, warmup, total):
  """The official per-iteration list: linspace warm-up, then cosine over the rest."""
  warm = list(np.linspace(0.0, peak, warmup))
  rest = total - warmup
  return warm + [final + 0.5 * (peak - final) * (1 + math.cos(math.pi * i / rest))
                 for i in range(rest)]


def test_schedule_hand_values():
  s = optim.Schedule(peak=1.0, final=0.1, warmup_steps=5, total_steps=15)
  # warm-up linspace(0, 1, 5) = 0, .25, .5, .75, 1 — step 4 is already the peak
  hand = {0: 0.0, 1: 0.25, 2: 0.5, 3: 0.75, 4: 1.0,
          5: 1.0,                                          # cosine at i = 0
          6: 0.1 + 0.45 * (1 + math.cos(math.pi * 0.1)),  # 0.9779754
          10: 0.55,                                        # i = 5 of 10: cos(π/2) = 0
          14: 0.1 + 0.45 * (1 + math.cos(math.pi * 0.9)),  # 0.1220246
          15: 0.1, 16: 0.1, 1000: 0.1}
  for step, want in hand.items():
    assert float(s(step)) == pytest.approx(want, abs=1e-6), step
  assert float(s(6)) == pytest.approx(0.9779754, abs=1e-6)
  assert float(s(14)) == pytest.approx(0.1220246, abs=1e-6)


def test_schedule_matches_official_list_and_jits():
  s = optim.Schedule(peak=2.4e-3, final=2e-5, warmup_steps=7, total_steps=40)
  want = _official_cosine(2.4e-3, 2e-5, 7, 40)
  got = jax.jit(jax.vmap(s))(jnp.arange(40))
  np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-10)
  assert float(s(0)) == 0.0                    # warm-up starts from 0 (docs/method.md#schedule)
  assert float(s(6)) == pytest.approx(2.4e-3)   # last warm-up step is the peak
  assert float(s(40)) == pytest.approx(2e-5)    # ends at final
  assert float(s(jnp.int32(3))) == pytest.approx(2.4e-3 * 3 / 6)


def test_schedule_without_or_with_one_warmup_step():
  s0 = optim.Schedule(peak=1.0, final=0.0, warmup_steps=0, total_steps=4)
  np.testing.assert_allclose([float(s0(i)) for i in range(5)],
                             _official_cosine(1.0, 0.0, 0, 4) + [0.0], atol=1e-6)
  s1 = optim.Schedule(peak=1.0, final=0.0, warmup_steps=1, total_steps=5)
  # linspace(0, 1, 1) = [0]
  np.testing.assert_allclose([float(s1(i)) for i in range(5)],
                             _official_cosine(1.0, 0.0, 1, 5), atol=1e-6)


@pytest.mark.parametrize("data,videos,passes_steps", [("k400", 240_436, 469),
                                                      ("ssv2", 168_913, 329)])
def test_schedule_from_default_config(data, videos, passes_steps):
  config = pretrain_config.get_config(f"data={data},model=B")
  assert config.data.train_videos == videos
  assert config.batch_size == 2048 and config.data.num_sample == 4
  # videos per update 2048 / 4 = 512; one pass = videos // 512 steps; an "epoch"
  # of the 800 counts repeated samples: 4 epochs per pass (as train.py passes it).
  assert videos // 512 == passes_steps
  s = optim.schedule_from_config(config, (videos // 512) / 4)
  assert s.peak == pytest.approx(2.4e-3)        # 1.2e-3 × 512 / 256
  assert s.final == pytest.approx(2e-5)         # 1e-5 × 512 / 256
  assert s.total_steps == 200 * passes_steps    # 93,800 (k400), 65,800 (ssv2)
  assert s.warmup_steps == 10 * passes_steps    # 4,690 (k400), 3,290 (ssv2)
  if data == "k400":
    assert (s.total_steps, s.warmup_steps) == (93_800, 4_690)
  assert config.optim.clip_norm == 0.02
  assert (config.optim.b1, config.optim.b2, config.optim.eps) == (0.9, 0.95, 1e-8)
  assert config.optim.weight_decay == 0.05


def test_total_steps_sets_the_run_length_and_the_cosine_ends_with_it():
  config = pretrain_config.get_config("runlocal")
  assert config.total_steps == 0                # the default: optim.epochs' worth
  derived = optim.schedule_from_config(config, 8.0)
  assert derived.total_steps == config.optim.epochs * 8
  config.total_steps = 300
  s = optim.schedule_from_config(config, 8.0)
  assert (s.total_steps, s.warmup_steps) == (300, derived.warmup_steps)
  assert float(s(300)) == pytest.approx(s.final) and float(s(200)) > s.final


# ----------------------------------------------------------------------------- decay mask

NO_DECAY = {"bias", "scale", "q_bias", "v_bias", "mask_token"}


@pytest.fixture(scope="module")
def small_params():
  align = ml_collections.ConfigDict(dict(
      method="serial", student_layers=(2, 4), generator_depth=1, learnable_mask_tokens=True))

  model = nnx.eval_shape(lambda: pretrain.Pretrainer(
      vit.decode_variant("Mu/8x2"), num_frames=4, image_size=32, decoder_depth=1,
      align=align, teacher_variant=vit.decode_variant("Ti/8x2"), rngs=nnx.Rngs(0)))
  # The real parameter tree, filled with arbitrary non-zero values (no init compiles).
  rng = np.random.default_rng(0)
  return jax.tree.map(lambda s: jnp.asarray(rng.normal(size=s.shape) + 0.5, s.dtype),
                      nnx.state(model, nnx.Param))


def _names(state):
  return {tuple(str(k) for k in path): v for path, v in nnx.to_flat_state(state)}


def test_decay_mask_on_a_real_model(small_params):
  mask = _names(optim.decay_mask(small_params))
  params = _names(small_params)
  assert mask.keys() == params.keys()
  seen = set()
  for path, decay in mask.items():
    decay = bool(decay.get_value() if hasattr(decay, "get_value") else decay)
    leaf = path[-1]
    seen.add(leaf)
    if leaf == "kernel":
      assert decay, path
    else:
      assert leaf in NO_DECAY, path
      assert not decay, path
  # Everything the spec lists is present in this model and so was checked.
  assert {"kernel", "bias", "scale", "q_bias", "v_bias", "mask_token"} <= seen
  assert bool(mask[("encoder", "patch_embed", "kernel")].get_value())    # 5-D conv kernel
  assert not bool(mask[("encoder", "patch_embed", "bias")].get_value())


def _cfg(clip_norm=0.02, eps=1e-8):
  return ml_collections.ConfigDict(dict(optim=dict(
      clip_norm=clip_norm, b1=0.9, b2=0.95, eps=eps, weight_decay=0.05)))


def test_optimizer_decays_only_kernels(small_params):
  tx = optim.optimizer(_cfg(), lambda step: 0.1)
  zeros = jax.tree.map(jnp.zeros_like, small_params)
  updates, _ = jax.jit(tx.update)(zeros, jax.jit(tx.init)(small_params), small_params)
  params, ups = _names(small_params), _names(updates)
  for path, p in params.items():
    p = np.asarray(p.get_value())
    u = np.asarray(ups[path].get_value())
    if path[-1] == "kernel":
      np.testing.assert_allclose(u, -0.1 * 0.05 * p, rtol=1e-6, atol=1e-12, err_msg=str(path))
    else:
      np.testing.assert_array_equal(u, 0.0, err_msg=str(path))


def test_layer_decay_counts_the_depth_it_is_given(small_params):
  """The patch embedding's update is decay^(depth + 1) times the plain one, block k's
  decay^(depth − k), and what follows the encoder keeps its own (the caller's depth,
  not one read from the config)."""
  cfg = _cfg()
  plain = optim.optimizer(cfg, lambda step: 0.1)
  cfg.optim.layer_decay = 0.5
  decayed = optim.optimizer(cfg, lambda step: 0.1, small_params, depth=4)
  grads = jax.tree.map(jnp.ones_like, small_params)
  u_plain, u_decay = (_names(tx.update(grads, tx.init(small_params), small_params)[0])
                      for tx in (plain, decayed))
  block = ("encoder", "blocks", "layers", "{}", "mlp", "fc1", "kernel")
  want = {("encoder", "patch_embed", "kernel"): 0.5 ** 5,
          tuple(k.format(0) for k in block): 0.5 ** 4,
          tuple(k.format(3) for k in block): 0.5,
          next(p for p in u_plain if p[0] != "encoder"): 1.0}
  for path, scale in want.items():
    np.testing.assert_allclose(np.asarray(u_decay[path].get_value()),
                               scale * np.asarray(u_plain[path].get_value()), rtol=1e-6,
                               err_msg=str(path))


# ----------------------------------------------------------------------------- clipping

P = {"w": jnp.asarray([[0.5, -1.0, 2.0], [0.0, 1.5, -0.5]]), "b": jnp.asarray([0.1, -0.2, 0.3])}
# Gradient with global norm √(9+16+0+144+0+0+0+0+0) = 13, scaled ×4 → 52.
G_BIG = {"w": 4.0 * jnp.asarray([[3.0, 0.0, -4.0], [0.0, 0.0, 0.0]]),
         "b": 4.0 * jnp.asarray([0.0, 12.0, 0.0])}


def _global_norm(g):
  return math.sqrt(sum(float(np.sum(np.asarray(x) ** 2)) for x in g.values()))


def test_first_update_uses_the_clipped_gradient_by_hand():
  # With eps = 1 the first AdamW direction m̂/(√v̂ + eps) = g/(|g| + 1) depends on
  # the gradient's size, so the clipping shows.
  lr, wd = 0.1, 0.05
  tx = optim.optimizer(_cfg(clip_norm=0.02, eps=1.0), lambda step: lr)
  assert _global_norm(G_BIG) == pytest.approx(52.0)
  updates, _ = tx.update(G_BIG, tx.init(P), P)
  for name in ("w", "b"):
    gc = np.asarray(G_BIG[name]) * 0.02 / 52.0
    want = gc / (np.abs(gc) + 1.0)
    if name == "w":
      want = want + wd * np.asarray(P[name])
    np.testing.assert_allclose(np.asarray(updates[name]), -lr * want, rtol=1e-5, atol=1e-9)
  # Unclipped for contrast: the same code without clipping gives g/(|g|+1) ≈ ±0.99.
  tx_raw = optim.optimizer(_cfg(clip_norm=0.0, eps=1.0), lambda step: lr)
  raw, _ = tx_raw.update(G_BIG, tx_raw.init(P), P)
  assert abs(float(raw["b"][1])) > 0.09
  assert abs(float(updates["b"][1])) < 2e-3   # 0.1 · 0.01846 / 1.01846


def test_small_gradient_is_not_clipped():
  lr = 0.1
  g = {"w": jnp.full((2, 3), 0.002), "b": jnp.asarray([0.001, 0.0, -0.003])}
  assert _global_norm(g) < 0.02
  tx = optim.optimizer(_cfg(clip_norm=0.02, eps=1.0), lambda step: lr)
  updates, _ = tx.update(g, tx.init(P), P)
  want_b = np.asarray(g["b"]) / (np.abs(np.asarray(g["b"])) + 1.0)
  np.testing.assert_allclose(np.asarray(updates["b"]), -lr * want_b, rtol=1e-5, atol=1e-12)


def test_two_steps_match_adamw_on_manually_clipped_gradients():
  sched = optim.Schedule(peak=1e-2, final=1e-3, warmup_steps=0, total_steps=10)
  tx = optim.optimizer(_cfg(), sched)
  ref = optax.adamw(sched, b1=0.9, b2=0.95, eps=1e-8, weight_decay=0.05,
                    mask={"w": True, "b": False})
  noclip = optim.optimizer(_cfg(clip_norm=0.0), sched)
  g2 = {"w": jnp.asarray([[0.001, -0.002, 0.0], [0.003, 0.0, 0.001]]),
        "b": jnp.asarray([-0.001, 0.002, 0.0])}          # norm < 0.02: unclipped

  def clip(g):
    n = _global_norm(g)
    return jax.tree.map(lambda x: x * min(1.0, 0.02 / n), g)

  params, ref_params, raw_params = P, P, P
  state, ref_state, raw_state = tx.init(P), ref.init(P), noclip.init(P)
  for g in (G_BIG, g2):
    u, state = tx.update(g, state, params)
    params = optax.apply_updates(params, u)
    ru, ref_state = ref.update(clip(g), ref_state, ref_params)
    ref_params = optax.apply_updates(ref_params, ru)
    nu, raw_state = noclip.update(g, raw_state, raw_params)
    raw_params = optax.apply_updates(raw_params, nu)
  for name in ("w", "b"):
    np.testing.assert_allclose(np.asarray(params[name]), np.asarray(ref_params[name]),
                               rtol=1e-6, atol=1e-9)
  # Without clipping the second step is dominated by the huge first gradient.
  assert not np.allclose(np.asarray(params["b"]), np.asarray(raw_params["b"]),
                         rtol=1e-4, atol=1e-7)
