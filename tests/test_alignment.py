"""AMD's alignment heads, which tokens each branch touches, and where gradients flow.

docs/method.md#token-order, docs/method.md#student-branch,
docs/method.md#teacher-branch, docs/method.md#alignment (the four methods),
docs/method.md#generator-mask-tokens (frozen), docs/method.md#losses (gradient flow).

Tiny models: a ViT-"Mu" student (width 64, 4 blocks) on 4×32×32 clips with 8×8×2
tubelets (grid 2×4×4 = 32 tokens) and a ViT-Ti teacher (width 192, 12 blocks).
Masks: student ratio 0.75 (4 of 16 visible per slice), teacher 0.5 (8 visible):
8 student tokens, 16 teacher tokens, 8 diff tokens, 24 reconstructed.
"""

import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx

from amd_jax import errors, losses, masking, steps
from amd_jax.models import decoders, pretrain, vit

STUDENT = vit.decode_variant("Mu/8x2")
TEACHER = vit.decode_variant("Ti/8x2")
FRAMES, SIZE, PATCH, TUBELET = 4, 32, 8, 2
GRID = (2, 4, 4)
N = 32
COUNTS = masking.tube_counts(GRID, 0.75, 0.5)
N_STU, N_TEA, N_DIFF, N_MASKED = 8, 16, 8, 24
B = 2
STUDENT_LAYERS, TEACHER_LAYERS = (2, 4), (6, 12)
METHODS = ("direct", "generation", "parallel", "serial")


def test_counts_of_the_test_setup():
  assert (COUNTS.tokens, COUNTS.student, COUNTS.teacher, COUNTS.diff, COUNTS.masked) == (
      N, N_STU, N_TEA, N_DIFF, N_MASKED)


def _align(method="serial", learnable=True):
  return ml_collections.ConfigDict(dict(
      method=method, student_layers=STUDENT_LAYERS, generator_depth=1,
      learnable_mask_tokens=learnable))


def _student(method="serial", learnable=True, seed=0):
  return pretrain.Pretrainer(STUDENT, num_frames=FRAMES, image_size=SIZE, decoder_depth=1,
                             align=_align(method, learnable), teacher_variant=TEACHER,
                             rngs=nnx.Rngs(seed))


def _teacher(seed=1):
  return vit.Encoder(TEACHER, num_frames=FRAMES, image_size=SIZE, final_norm=False,
                     rngs=nnx.Rngs(seed))


def _codes(seed=0):
  rng = np.random.default_rng(seed)
  return np.stack([masking.tube_mask(rng, GRID, 0.75, 0.5) for _ in range(B)])


def _token_slices(k):
  """Pixel slices (frames, rows, cols) of token k in (t, h, w) order, w fastest."""
  t, rest = divmod(k, GRID[1] * GRID[2])
  h, w = divmod(rest, GRID[2])
  return (slice(TUBELET * t, TUBELET * (t + 1)), slice(PATCH * h, PATCH * (h + 1)),
          slice(PATCH * w, PATCH * (w + 1)))


def _flat(state):
  return {tuple(str(k) for k in path): np.asarray(v.get_value())
          for path, v in nnx.to_flat_state(state)}


@pytest.fixture(scope="module")
def setup():
  """Serial student, teacher, one batch, its indices and jitted forwards (built once)."""
  student = _student("serial")
  teacher = _teacher()
  codes = _codes()
  rng = np.random.default_rng(0)
  video_u8 = rng.integers(0, 256, (B, FRAMES, SIZE, SIZE, 3), dtype=np.uint8)
  video = losses.normalize(jnp.asarray(video_u8))
  idx = masking.indices(jnp.asarray(codes), COUNTS)

  s_def, s_state = nnx.split(student)
  t_def, t_state = nnx.split(teacher)

  @jax.jit
  def student_fn(state, video):
    model = nnx.merge(s_def, state)
    out = model(video, idx)
    _, hidden = model.encoder(video, idx.student)
    return dict(out, hidden=hidden)

  @jax.jit
  def teacher_fn(state, video, idx_teacher):
    _, hidden = nnx.merge(t_def, state)(video, idx_teacher)
    return [hidden[l - 1] for l in TEACHER_LAYERS]

  return dict(student=student, teacher=teacher, codes=codes, video_u8=video_u8,
              video=video, idx=idx, student_fn=functools.partial(student_fn, s_state),
              teacher_fn=functools.partial(teacher_fn, t_state))


# ----------------------------------------------------------------------------- branches


@pytest.mark.parametrize("method", METHODS)
def test_output_shapes_per_method(method):
  model = nnx.eval_shape(lambda: _student(method))
  graphdef, state = nnx.split(model)
  video = jax.ShapeDtypeStruct((B, FRAMES, SIZE, SIZE, 3), jnp.float32)
  codes = jnp.asarray(_codes())
  out = jax.eval_shape(
      lambda s, v: nnx.merge(graphdef, s)(v, masking.indices(codes, COUNTS)), state, video)
  assert out["pred"].shape == (B, N_MASKED, TUBELET * PATCH * PATCH * 3)
  has_direct = method != "generation"
  has_generated = method != "direct"
  assert isinstance(out["direct"], tuple) and isinstance(out["generated"], tuple)
  assert [x.shape for x in out["direct"]] == ([(B, N_STU, 192)] * 2 if has_direct else [])
  assert [x.shape for x in out["generated"]] == (
      [(B, N_DIFF, 192)] * 2 if has_generated else [])


@pytest.mark.parametrize("method", METHODS)
def test_parameter_structure_per_method(method):
  model = nnx.eval_shape(lambda: _student(method))
  a = model.alignment
  params = {k[1:]: v.shape for k, v in (
      (tuple(str(x) for x in path), v) for path, v in
      nnx.to_flat_state(nnx.state(model, nnx.Param))) if k[0] == "alignment"}
  heads = {k[0] for k in params}
  want_heads = {
      "serial": {"projection_heads", "generators"},            # ONE projection per pair
      "parallel": {"projection_heads", "generator_projections", "generators"},
      "generation": {"generator_projections", "generators"},
      "direct": {"direct_heads"},
  }[method]
  assert heads == want_heads
  if method == "serial":
    assert a.generator_projections is None and a.direct_heads is None
  for name in ("projection_heads", "generator_projections"):
    if name in want_heads:
      assert len(getattr(a, name)) == 2
      for i in range(2):  # bias-free Linear D_s → D_t
        assert params[(name, str(i), "kernel")] == (64, 192)
        assert (name, str(i), "bias") not in params
  if method == "direct":  # Supp. B: 2-layer MLP, hidden = teacher width
    for i in range(2):
      assert params[("direct_heads", str(i), "fc1", "kernel")] == (64, 192)
      assert params[("direct_heads", str(i), "fc2", "kernel")] == (192, 192)
  if "generators" in want_heads:
    assert len(a.generators) == 2
    for i in range(2):
      assert params[("generators", str(i), "mask_token")] == (192,)
      # depth 1 generator at teacher width (heads = teacher heads); no norm, no head
      assert params[("generators", str(i), "blocks", "layers", "0", "mlp", "fc1",
                     "kernel")] == (192, 768)
      assert not any(k[:2] == ("generators", str(i)) and k[2] in ("norm", "head")
                     for k in params)


def _alignment(method, seed=0):
  return decoders.Alignment(method, 2, 64, 192, generator_depth=1,
                            num_tokens=N, rngs=nnx.Rngs(seed))


def _features_and_idx():
  rng = np.random.default_rng(5)
  feats = [jnp.asarray(rng.normal(size=(B, N_STU, 64)), jnp.float32) for _ in range(2)]
  idx = masking.indices(jnp.asarray(_codes(3)), COUNTS)
  return feats, idx


def _close(a, b):
  np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2e-5, atol=2e-5)


def test_serial_shares_one_projection_between_branches():
  a = _alignment("serial")
  feats, idx = _features_and_idx()
  direct, generated = a(feats, idx.student, idx.diff)
  for i, z in enumerate(feats):
    kernel = np.asarray(a.projection_heads[i].kernel.get_value())
    _close(direct[i], np.asarray(z) @ kernel)               # P(z), no bias
    _close(generated[i], a.generators[i](direct[i], idx.student, idx.diff))


def test_parallel_uses_separate_projections():
  a = _alignment("parallel")
  feats, idx = _features_and_idx()
  direct, generated = a(feats, idx.student, idx.diff)
  for i, z in enumerate(feats):
    p_dir = np.asarray(a.projection_heads[i].kernel.get_value())
    p_gen = np.asarray(a.generator_projections[i].kernel.get_value())
    assert not np.allclose(p_dir, p_gen)
    _close(direct[i], np.asarray(z) @ p_dir)
    _close(generated[i], a.generators[i](jnp.asarray(np.asarray(z) @ p_gen), idx.student,
                                         idx.diff))
    assert not np.allclose(np.asarray(generated[i]),
                           np.asarray(a.generators[i](direct[i], idx.student, idx.diff)),
                           atol=1e-4)


def test_generation_only_and_direct_only():
  feats, idx = _features_and_idx()
  g = _alignment("generation")
  direct, generated = g(feats, idx.student, idx.diff)
  assert direct == ()
  for i, z in enumerate(feats):
    p = np.asarray(g.generator_projections[i].kernel.get_value())
    _close(generated[i], g.generators[i](jnp.asarray(np.asarray(z) @ p), idx.student,
                                         idx.diff))
  d = _alignment("direct")
  direct, generated = d(feats, idx.student, idx.diff)
  assert generated == ()
  for i, z in enumerate(feats):
    h = d.direct_heads[i]
    w1, b1 = np.asarray(h.fc1.kernel.get_value()), np.asarray(h.fc1.bias.get_value())
    w2, b2 = np.asarray(h.fc2.kernel.get_value()), np.asarray(h.fc2.bias.get_value())
    hid = np.asarray(jax.nn.gelu(jnp.asarray(np.asarray(z) @ w1 + b1), approximate=False))
    _close(direct[i], hid @ w2 + b2)                         # Linear → exact GELU → Linear


def test_generator_positions_travel_with_the_indices():
  # Mask tokens carry their position only through the PE: permuting the diff
  # indices permutes the generated tokens the same way (row j ↔ idx_diff[:, j]).
  a = _alignment("serial")
  feats, idx = _features_and_idx()
  g = a.generators[0]
  f = a.projection_heads[0](feats[0])
  perm = np.array([3, 0, 7, 5, 1, 6, 2, 4])
  base = g(f, idx.student, idx.diff)
  _close(g(f, idx.student, idx.diff[:, perm]), np.asarray(base)[:, perm])
  # and the output is the raw residual stream of the mask-token rows (no final LN)
  assert not np.allclose(np.asarray(base).mean(-1), 0.0, atol=1e-3)


def test_alignment_uses_the_configured_student_layers(setup):
  out = setup["student_fn"](setup["video"])
  model = setup["student"]
  for i, layer in enumerate(STUDENT_LAYERS):   # 1-indexed raw block outputs
    kernel = np.asarray(model.alignment.projection_heads[i].kernel.get_value())
    _close(out["direct"][i], np.asarray(out["hidden"][layer - 1]) @ kernel)


def test_unknown_method_refused():
  with pytest.raises(errors.BadInput):
    _alignment("cosine")


# ----------------------------------------------------------------------------- tokens touched


def _student_outputs(setup):
  """[direct ×2, generated ×2, pred] of the serial student as a function of the video."""
  def f(video):
    out = setup["student_fn"](video)
    return [*out["direct"], *out["generated"], out["pred"]]
  return f


def _teacher_features(setup):
  return lambda video: setup["teacher_fn"](video, setup["idx"].teacher)


def _dependency(fn, video, num_outputs):
  """dep[o, b, b2, k]: does output o of clip b depend on token k of clip b2's pixels."""
  rng = np.random.default_rng(11)
  outs = jax.eval_shape(fn, video)
  cots = [jnp.asarray(rng.normal(size=o.shape), jnp.float32) for o in outs]

  def scalars(v):
    return jnp.stack([jnp.sum(o * c, axis=tuple(range(1, o.ndim)))
                      for o, c in zip(fn(v), cots)])                     # (outputs, B)

  jac = np.asarray(jax.jit(jax.jacrev(scalars))(video))  # (outputs, B, B, T, H, W, C)
  assert jac.shape[:2] == (num_outputs, B)
  dep = np.zeros((num_outputs, B, B, N), bool)
  for k in range(N):
    ft, fh, fw = _token_slices(k)
    dep[..., k] = np.abs(jac[:, :, :, ft, fh, fw]).sum(axis=(-4, -3, -2, -1)) > 0
  return dep


def test_student_branches_touch_only_student_visible_tokens(setup):
  dep = _dependency(_student_outputs(setup), setup["video"], 5)   # direct ×2, generated ×2, pred
  codes = setup["codes"]
  for o in range(5):
    for b in range(B):
      for b2 in range(B):
        want = (codes[b2] == 0) if b == b2 else np.zeros(N, bool)
        np.testing.assert_array_equal(dep[o, b, b2], want, err_msg=f"output {o} {b}<-{b2}")


def test_teacher_touches_student_and_diff_tokens(setup):
  dep = _dependency(_teacher_features(setup), setup["video"], 2)
  codes = setup["codes"]
  for o in range(2):
    for b in range(B):
      for b2 in range(B):
        want = (codes[b2] <= 1) if b == b2 else np.zeros(N, bool)
        np.testing.assert_array_equal(dep[o, b, b2], want, err_msg=f"layer {o} {b}<-{b2}")


def _perturbed(video, b, k, rng):
  v = np.array(video)
  ft, fh, fw = _token_slices(k)
  v[b, ft, fh, fw] += rng.normal(size=v[b, ft, fh, fw].shape) * 2.0
  return jnp.asarray(v)


def test_perturbing_pixels(setup):
  codes, video = setup["codes"], setup["video"]
  student, teacher = _student_outputs(setup), _teacher_features(setup)
  base_s, base_t = student(video), teacher(video)
  rng = np.random.default_rng(2)
  for b in range(B):
    for code in (0, 1, 2):
      k = int(np.flatnonzero(codes[b] == code)[0])
      v = _perturbed(video, b, k, rng)
      s, t = student(v), teacher(v)
      for o, (x, y) in enumerate(zip(s, base_s)):
        other = [c for c in range(B) if c != b]
        np.testing.assert_array_equal(np.asarray(x)[other], np.asarray(y)[other])
        if code == 0:
          assert not np.allclose(np.asarray(x)[b], np.asarray(y)[b]), (b, code, o)
        else:   # direct, generated and pixel predictions ignore masked pixels
          np.testing.assert_array_equal(np.asarray(x), np.asarray(y), err_msg=f"{b} {code} {o}")
      for o, (x, y) in enumerate(zip(t, base_t)):
        if code == 2:
          np.testing.assert_array_equal(np.asarray(x), np.asarray(y), err_msg=f"{b} {code} {o}")
        else:
          assert not np.allclose(np.asarray(x)[b], np.asarray(y)[b]), (b, code, o)


def test_teacher_targets_are_at_student_then_diff_tokens(setup):
  # The teacher's input order [student asc ++ diff asc] only labels rows: the same
  # teacher run on its tokens in global ascending order gives the same features
  # at the same tokens (attention is permutation-equivariant; PE carries position).
  codes, video, idx = setup["codes"], setup["video"], setup["idx"]
  tf = setup["teacher_fn"]
  sorted_idx = jnp.asarray(np.stack([np.flatnonzero(c <= 1) for c in codes]), jnp.int32)
  feats, feats_sorted = tf(video, idx.teacher), tf(video, sorted_idx)
  for f, fs in zip(feats, feats_sorted):
    f, fs = np.asarray(f), np.asarray(fs)
    for b in range(B):
      pos = {int(t): r for r, t in enumerate(sorted_idx[b])}
      stu, dif = np.flatnonzero(codes[b] == 0), np.flatnonzero(codes[b] == 1)
      np.testing.assert_allclose(f[b, :N_STU], fs[b, [pos[t] for t in stu]], rtol=1e-4,
                                 atol=1e-4)
      np.testing.assert_allclose(f[b, N_STU:], fs[b, [pos[t] for t in dif]], rtol=1e-4,
                                 atol=1e-4)


# ----------------------------------------------------------------------------- losses and gradients


def _task(student, teacher, **kw):
  return steps.PretrainTask(student=nnx.graphdef(student), teacher=nnx.graphdef(teacher),
                            counts=COUNTS, patch=PATCH, tubelet=TUBELET,
                            teacher_layers=TEACHER_LAYERS, **kw)


def _args(setup, student=None):
  student = setup["student"] if student is None else student
  batch = dict(video=jnp.asarray(setup["video_u8"]), mask=jnp.asarray(setup["codes"],
                                                                    jnp.int8))
  return (nnx.state(student, nnx.Param), nnx.state(student, decoders.FrozenToken),
          nnx.state(setup["teacher"], nnx.Param), batch, jax.random.key(0))


def _group(path):
  if path[0] == "alignment":
    return path[1]           # projection_heads | generators | ...
  if path[0] == "encoder" and path[1] == "norm":
    return "encoder_norm"
  return path[0]             # encoder | decoder


def _nonzero_by_leaf(tree):
  return {p: bool(np.any(v != 0)) for p, v in _flat(tree).items()}


@pytest.fixture(scope="module")
def default_grads(setup):
  """value_and_grad of pretrain_loss w.r.t. (student params, teacher params)."""
  task = _task(setup["student"], setup["teacher"])
  params, frozen, tparams, batch, rng = _args(setup)
  fn = jax.jit(functools.partial(
      jax.value_and_grad(steps.pretrain_loss, argnums=(0, 2), has_aux=True), task=task))
  (loss, metrics), (g_student, g_teacher) = fn(params, frozen, tparams, batch, rng)
  return dict(loss=loss, metrics=metrics, g_student=g_student, g_teacher=g_teacher,
              params=params, tparams=tparams)


def test_teacher_gets_no_gradient_student_does(default_grads):
  g = default_grads
  t = _flat(g["g_teacher"])
  assert t and t.keys() == _flat(g["tparams"]).keys()
  assert all(np.all(v == 0) for v in t.values())
  s = _nonzero_by_leaf(g["g_student"])
  assert s.keys() == _flat(g["params"]).keys()
  missing = [p for p, nz in s.items() if not nz]
  assert not missing, missing
  m = g["metrics"]
  for key in ("loss", "loss_rec", "loss_dir", "loss_gen"):
    assert np.isfinite(float(m[key])), key
  assert float(g["loss"]) == float(m["loss"])
  np.testing.assert_allclose(float(m["loss"]), float(m["loss_rec"]) + float(m["loss_dir"]) +
                             float(m["loss_gen"]), rtol=1e-6)


def _reference_targets(video01, codes):
  """Normalised-pixel targets of the student-masked tokens, in numpy
  (docs/method.md#pixel-targets)."""
  out = []
  for b in range(B):
    rows = []
    for k in np.flatnonzero(codes[b] > 0):
      ft, fh, fw = _token_slices(int(k))
      pix = video01[b, ft, fh, fw].reshape(-1, 3)          # (kt, kh, kw) × c
      rows.append(((pix - pix.mean(0)) / (pix.std(0, ddof=1) + 1e-6)).reshape(-1))
    out.append(rows)
  return np.asarray(out)


def test_loss_terms_recomputed_from_the_pieces(setup, default_grads):
  m = default_grads["metrics"]
  out = setup["student_fn"](setup["video"])
  direct, generated, pred = out["direct"], out["generated"], np.asarray(out["pred"])
  feats = [np.asarray(f) for f in _teacher_features(setup)(setup["video"])]
  targets = _reference_targets(setup["video_u8"].astype(np.float64) / 255.0, setup["codes"])
  assert targets.shape == pred.shape == (B, N_MASKED, 384)
  np.testing.assert_allclose(float(m["loss_rec"]), np.mean((pred - targets) ** 2), rtol=2e-4)
  # direct targets: the first n_student teacher tokens; generation: the rest
  want_dir = np.mean([np.mean((np.asarray(d) - f[:, :N_STU]) ** 2)
                      for d, f in zip(direct, feats)])
  want_gen = np.mean([np.mean((np.asarray(g) - f[:, N_STU:]) ** 2)
                      for g, f in zip(generated, feats)])
  np.testing.assert_allclose(float(m["loss_dir"]), want_dir, rtol=1e-4)
  np.testing.assert_allclose(float(m["loss_gen"]), want_gen, rtol=1e-4)


# ----------------------------------------------------------------------------- frozen mask tokens


@pytest.fixture(scope="module")
def frozen_model():
  return _student("serial", learnable=False)


def test_frozen_mask_tokens_are_not_params(setup, frozen_model):
  params = nnx.state(frozen_model, nnx.Param)
  frozen = nnx.state(frozen_model, decoders.FrozenToken)
  fp = _flat(frozen)
  assert set(fp) == {("alignment", "generators", "0", "mask_token"),
                     ("alignment", "generators", "1", "mask_token")}
  assert all(v.shape == (192,) for v in fp.values())
  assert all(isinstance(v, decoders.FrozenToken) for _, v in nnx.to_flat_state(frozen))
  assert not any(p[0] == "alignment" and p[-1] == "mask_token" for p in _flat(params))
  assert ("decoder", "mask_token") in _flat(params)   # the pixel decoder's stays learnable
  # the learnable variant has them as parameters and nothing frozen
  learnable = setup["student"]
  assert not _flat(nnx.state(learnable, decoders.FrozenToken))
  assert ("alignment", "generators", "0", "mask_token") in _flat(
      nnx.state(learnable, nnx.Param))


WEIGHTS = dict(rec_weight=0.0, dir_weight=0.5, gen_weight=0.0)


@pytest.fixture(scope="module")
def frozen_jacobians(setup, frozen_model):
  """Jacobians of [loss_rec, loss_dir, loss_gen, loss] through steps.pretrain_loss.

  On the frozen-mask-token student, with loss weights rec 0, dir 0.5, gen 0 (the
  terms themselves do not depend on the weights; the total does).
  """
  task = _task(frozen_model, setup["teacher"], **WEIGHTS)
  params, frozen, tparams, batch, rng = _args(setup, frozen_model)

  def terms(p, tp, fr):
    loss, m = steps.pretrain_loss(p, fr, tp, batch, rng, task)
    return jnp.stack([m["loss_rec"], m["loss_dir"], m["loss_gen"], loss]), m

  jac = jax.jit(jax.jacrev(terms, argnums=(0, 1), has_aux=True))
  (jac_s, jac_t), m = jac(params, tparams, frozen)
  other = jax.tree.map(lambda x: x + 0.5, frozen)
  _, m_other = jac(params, tparams, other)
  return dict(jac_s=_flat(jac_s), jac_t=_flat(jac_t), m=m, m_other=m_other, params=params)


def _reached(flat, row):
  got = {}
  for p, v in flat.items():
    got.setdefault(_group(p), []).append(bool(np.any(v[row] != 0)))
  return got


def test_each_loss_term_reaches_exactly_its_modules(frozen_jacobians):
  j = frozen_jacobians
  assert np.isfinite(float(j["m"]["loss"]))
  assert j["jac_s"].keys() == _flat(j["params"]).keys()
  assert all(np.all(v == 0) for v in j["jac_t"].values())      # teacher: nothing, ever
  # which groups each term must reach (docs/method.md#losses); all others get exactly zero
  reach = {
      0: {"encoder", "encoder_norm", "decoder"},                    # rec
      1: {"encoder", "projection_heads"},                           # dir
      2: {"encoder", "projection_heads", "generators"},             # gen
  }
  assert {_group(p) for p in j["jac_s"]} == {"encoder", "encoder_norm", "decoder",
                                             "projection_heads", "generators"}
  for term, want in reach.items():
    for group, nz in _reached(j["jac_s"], term).items():
      if group in want:
        assert any(nz), (term, group)
        if group != "encoder":           # every leaf of these modules is used
          assert all(nz), (term, group)
      else:
        assert not any(nz), (term, group)


def test_loss_weights(frozen_jacobians):
  # rec 0, dir 0.5, gen 0: the total is 0.5·loss_dir, and its gradient leaves the
  # decoder and the generators at exactly zero.
  m = frozen_jacobians["m"]
  assert float(m["loss"]) == pytest.approx(0.5 * float(m["loss_dir"]), rel=1e-6)
  assert float(m["loss_rec"]) > 0 and float(m["loss_gen"]) > 0     # still reported
  nz = _reached(frozen_jacobians["jac_s"], 3)
  assert not any(nz["decoder"]) and not any(nz["generators"]) and not any(nz["encoder_norm"])
  assert any(nz["encoder"]) and all(nz["projection_heads"])
  # and it is exactly half the loss_dir row
  for p, v in frozen_jacobians["jac_s"].items():
    np.testing.assert_allclose(v[3], 0.5 * v[1], rtol=1e-5, atol=1e-12, err_msg=str(p))


def test_frozen_mask_tokens_are_used(frozen_jacobians):
  # Other frozen-token values change the generation loss only.
  m, m2 = frozen_jacobians["m"], frozen_jacobians["m_other"]
  assert float(m2["loss_gen"]) != pytest.approx(float(m["loss_gen"]), rel=1e-6)
  assert float(m2["loss_rec"]) == float(m["loss_rec"])
  assert float(m2["loss_dir"]) == float(m["loss_dir"])


# ----------------------------------------------------------------------------- official defaults


@pytest.mark.parametrize("teacher_width, heads", [(64, 1), (128, 2), (192, 3), (1280, 20)])
def test_generator_heads_are_teacher_width_over_64(teacher_width, heads):
  """The official generator has teacher width / 64 heads whatever the teacher's own
  head count (ViT-H: 16 heads of 80, its generator 20 of 64)."""
  a = decoders.Alignment("serial", 1, 64, teacher_width, generator_depth=1, num_tokens=N,
                         rngs=nnx.Rngs(0))
  assert a.generators[0].blocks.layers[0].attn.heads == heads


def test_drop_path_reaches_decoder_and_generators():
  """model.drop_path > 0 turns on stochastic depth in the encoder, the pixel decoder
  and the generators alike, each linearly from 0 at its first block to the rate."""
  model = pretrain.Pretrainer(STUDENT, num_frames=FRAMES, image_size=SIZE, decoder_depth=2,
                              align=_align(), teacher_variant=TEACHER, drop_path=0.2,
                              rngs=nnx.Rngs(0))
  rates = lambda blocks: [b.drop_path for b in blocks.layers]
  assert rates(model.encoder.blocks) == pytest.approx([0.0, 0.2 / 3, 0.4 / 3, 0.2])
  assert rates(model.decoder.blocks) == pytest.approx([0.0, 0.2])
  for g in model.alignment.generators:
    assert rates(g.blocks) == pytest.approx([0.2])      # depth 1: the rate itself
  # With an rng the alignment outputs are stochastic; without one, deterministic.
  feats, idx = _features_and_idx()
  model.alignment.generators[0].blocks.layers[0].drop_path = 0.9
  _, gen_a = model.alignment(feats, idx.student, idx.diff, jax.random.key(0))
  _, gen_b = model.alignment(feats, idx.student, idx.diff, jax.random.key(1))
  _, gen_c = model.alignment(feats, idx.student, idx.diff)
  _, gen_d = model.alignment(feats, idx.student, idx.diff)
  assert not np.allclose(np.asarray(gen_a[0]), np.asarray(gen_b[0]))
  np.testing.assert_array_equal(np.asarray(gen_c[0]), np.asarray(gen_d[0]))


def test_table_s1_config_freezes_generator_mask_tokens():
  """The official generator mask tokens are never trained: the default config's are
  FrozenTokens, outside the parameters and the optimiser state."""
  from amd_jax import optim, sharding
  from amd_jax import state as state_lib
  from configs import pretrain as pretrain_config
  for arg in ("data=ssv2,model=S", "runlocal"):
    assert pretrain_config.get_config(arg).align.learnable_mask_tokens is False
  config = pretrain_config.get_config("runlocal")
  config.data.frames, config.data.size = 4, 32
  config.teacher.variant, config.align.teacher_layers = "Mu/8x2", (2, 4)
  mesh = sharding.make_mesh(config, jax.devices()[:1])
  schedule = optim.Schedule(peak=1e-3, final=1e-5, warmup_steps=0, total_steps=10)
  state, _, _, _ = state_lib.create_state(config, mesh, schedule)
  frozen = _flat(state["frozen"])
  assert set(frozen) == {("alignment", "generators", "0", "mask_token"),
                         ("alignment", "generators", "1", "mask_token")}
  assert not any(p[0] == "alignment" and p[-1] == "mask_token" for p in _flat(state["params"]))
  # Adam's moments mirror the parameters only: as many leaves, none of width-64 tokens
  # beyond the decoder's.
  n_params = len(jax.tree.leaves(state["params"]))
  moments = [x for x in jax.tree.leaves(state["opt_state"]) if getattr(x, "ndim", 0) > 0]
  assert len(moments) == 2 * n_params


@pytest.mark.slow
def test_target_norm_trains_the_same_modules():
  """align.target_norm=layernorm changes the targets, not which modules learn:
  the student's encoder, projections and generators get gradients, the teacher none."""
  s = _student("serial", learnable=False)
  t = _teacher()
  task = dict(student=nnx.graphdef(s), teacher=nnx.graphdef(t), counts=COUNTS, patch=PATCH,
              tubelet=TUBELET, teacher_layers=TEACHER_LAYERS)
  batch = {"video": jnp.asarray(np.random.default_rng(2).integers(0, 256, (B, FRAMES, SIZE,
                                                                          SIZE, 3)), jnp.uint8),
           "mask": jnp.asarray(_codes(3))}
  params, frozen, tparams = (nnx.state(s, nnx.Param), nnx.state(s, decoders.FrozenToken),
                             nnx.state(t, nnx.Param))
  out = {}
  for norm in ("none", "layernorm"):
    pt = steps.PretrainTask(**task, target_norm=norm)
    fn = jax.grad(lambda p, tp: steps.pretrain_loss(p, frozen, tp, batch, jax.random.key(0),
                                                    pt)[0], argnums=(0, 1))
    (loss, m) = steps.pretrain_loss(params, frozen, tparams, batch, jax.random.key(0), pt)
    out[norm] = (m, fn(params, tparams))
  (m_raw, (g_raw, gt_raw)), (m_ln, (g_ln, gt_ln)) = out["none"], out["layernorm"]
  assert float(m_raw["loss_rec"]) == float(m_ln["loss_rec"])
  assert float(m_raw["loss_dir"]) != float(m_ln["loss_dir"])
  for grads in (g_raw, g_ln):
    flat = _flat(grads)
    for prefix in (("encoder",), ("alignment", "projection_heads"), ("alignment", "generators")):
      assert any(np.abs(np.asarray(v)).max() > 0 for k, v in flat.items()
                 if k[:len(prefix)] == prefix), prefix
  for grads in (gt_raw, gt_ln):
    assert all(np.abs(np.asarray(v)).max() == 0 for v in jax.tree.leaves(grads))
