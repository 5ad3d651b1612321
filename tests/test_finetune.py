"""Fine-tuning and evaluation: layer decay, mixup targets, multi-view scores, init loading,
and the runlocal fine-tuning + standalone test end to end (docs/method.md#fine-tuning-recipe,
docs/method.md#data-pipeline)."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from amd_jax import checkpoint, losses, optim, pretrained, sharding, steps, tasks
from amd_jax import state as state_lib
from amd_jax.evaluators import classification
from amd_jax import mixup as mixup_lib
from amd_jax.convert import spec as spec_lib
from amd_jax.models import build
from configs import finetune as finetune_config
from configs import transfer as transfer_config
from runs import ROOT, rows

# ----------------------------------------------------------------------------- layer decay


@pytest.mark.parametrize("model,decay", [("S", 0.7), ("B", 0.75)])
def test_layer_decay_multipliers(model, decay):
  config = finetune_config.get_config(f"data=ssv2,model={model}")
  assert config.optim.layer_decay == decay            # Table S2: 0.7 for ViT-S on SSV2
  abstract = nnx.eval_shape(lambda: tasks.of(config).model(nnx.Rngs(0)))
  params = nnx.state(abstract, nnx.Param)
  scales = spec_lib.flatten(optim.layer_decay_scales(params, decay, 12))
  # scale(id) = decay^(depth + 1 − id): embedding id 0, block k id k + 1, the rest depth + 1.
  assert scales["encoder/patch_embed/kernel"] == pytest.approx(decay ** 13)
  assert scales["encoder/patch_embed/bias"] == pytest.approx(decay ** 13)
  for k in range(12):
    for name in ("attn/qkv/kernel", "attn/q_bias", "norm1/scale", "mlp/fc2/bias"):
      assert scales[f"encoder/blocks/layers/{k}/{name}"] == pytest.approx(decay ** (12 - k))
  for name in ("fc_norm/scale", "fc_norm/bias", "head/kernel", "head/bias"):
    assert scales[name] == 1.0
  assert len(scales) == 4 + 2 + 12 * 13


def test_layer_decay_scales_the_whole_adamw_update():
  """With decay, each update is exactly the plain AdamW update times its layer's multiplier."""
  config = finetune_config.get_config("runlocal")
  config.optim.weight_decay = 0.05
  model = tasks.of(config).model(nnx.Rngs(0))
  params = nnx.state(model, nnx.Param)
  grads = jax.tree.map(lambda p: jnp.full(p.shape, 0.3, p.dtype), params)
  schedule = optim.Schedule(peak=1e-2, final=1e-2, warmup_steps=0, total_steps=10)
  decayed = optim.optimizer(config, schedule, params, depth=4)
  config.optim.layer_decay = 1.0
  plain = optim.optimizer(config, schedule, params)
  u_decay, _ = decayed.update(grads, decayed.init(params), params)
  u_plain, _ = plain.update(grads, plain.init(params), params)
  scales = optim.layer_decay_scales(params, 0.75, 4)
  jax.tree.map(lambda a, b, s: np.testing.assert_allclose(a, b * s, rtol=1e-6),
               u_decay, u_plain, scales)
  # weight decay only on matrices: kernels, not biases or norms
  mask = spec_lib.flatten(optim.decay_mask(params))
  assert mask["head/kernel"] and mask["encoder/blocks/layers/0/attn/qkv/kernel"]
  assert not mask["head/bias"] and not mask["fc_norm/scale"]
  assert not mask["encoder/blocks/layers/0/attn/q_bias"]


# ----------------------------------------------------------------------------- mixup


def test_label_smoothing_targets():
  t = mixup_lib.smooth_one_hot(jnp.array([2, 0]), 4, 0.1)
  # off = 0.1 / 4 = 0.025, on = 1 − 0.1 + 0.025 = 0.925
  np.testing.assert_allclose(t, [[0.025, 0.025, 0.925, 0.025],
                                 [0.925, 0.025, 0.025, 0.025]], rtol=1e-6)


def test_mixup_targets_and_video_by_hand():
  """prob 1, mixup only: x_i = λ x_i + (1 − λ) x_{B−1−i}; targets mixed with the same λ."""
  mix = mixup_lib.Mixup(mixup_alpha=0.8, cutmix_alpha=0.0, label_smoothing=0.1)
  video = jnp.arange(3.0).reshape(3, 1, 1, 1, 1) * jnp.ones((3, 2, 4, 4, 3))
  key = jax.random.key(0)
  out, targets = mix(key, video, jnp.array([0, 1, 2]), 3)
  # sample 0 (all 0) mixes with sample 2 (all 2): 0·λ + 2·(1 − λ) → λ = 1 − out/2
  lam = 1.0 - float(out[0, 0, 0, 0, 0]) / 2.0
  assert 0.0 < lam < 1.0
  np.testing.assert_allclose(out[1], jnp.ones_like(out[1]), rtol=1e-6)   # 1 with itself
  np.testing.assert_allclose(out[2], 2 * lam * jnp.ones_like(out[2]), rtol=1e-5)
  off, on = 0.1 / 3, 0.9 + 0.1 / 3
  y0 = np.array([on, off, off]) * lam + np.array([off, off, on]) * (1 - lam)
  np.testing.assert_allclose(targets[0], y0, rtol=1e-5)
  np.testing.assert_allclose(targets.sum(-1), 1.0, rtol=1e-6)


def test_cutmix_box_and_corrected_lambda_by_hand():
  mix = mixup_lib.Mixup(mixup_alpha=0.0, cutmix_alpha=1.0, label_smoothing=0.0)
  video = jnp.stack([jnp.zeros((2, 8, 8, 3)), jnp.ones((2, 8, 8, 3))])
  for seed in range(5):
    out, targets = mix(jax.random.key(seed), video, jnp.array([0, 1]), 2)
    box = np.asarray(out[0, 0, :, :, 0]) == 1.0       # pasted from sample 1
    # one box, the same on every frame and channel
    assert (np.asarray(out[0, :, :, :, :]) == box[None, :, :, None]).all()
    lam = 1.0 - box.sum() / 64.0                      # corrected to the true area
    np.testing.assert_allclose(targets[0], [lam, 1 - lam], atol=1e-6)
    np.testing.assert_allclose(targets[1], [lam, 1 - lam][::-1], atol=1e-6)
    if box.any():
      ys, xs = np.nonzero(box)
      assert box[ys.min():ys.max() + 1, xs.min():xs.max() + 1].all()   # a rectangle


def test_cutmix_box_sides():
  """λ = 0.75: sides int(8 · √0.25) = 4, half-sides 2 around the centre, clipped."""
  mask, lam = mixup_lib.cutmix_box(jax.random.key(1), jnp.float32(0.75), 8, 8)
  ys, xs = np.nonzero(np.asarray(mask))
  assert ys.max() - ys.min() + 1 <= 4 and xs.max() - xs.min() + 1 <= 4
  assert float(lam) == pytest.approx(1 - mask.sum() / 64)


def test_no_mixup_is_label_smoothing():
  mix = mixup_lib.Mixup(prob=0.0, label_smoothing=0.1)
  video = jnp.ones((2, 1, 2, 2, 3))
  out, targets = mix(jax.random.key(0), video, jnp.array([1, 0]), 2)
  np.testing.assert_array_equal(out, video)
  np.testing.assert_allclose(targets, [[0.05, 0.95], [0.95, 0.05]], rtol=1e-6)
  logits = jnp.array([[0.0, 1.0], [2.0, 0.0]])
  logp = np.log(np.exp(logits) / np.exp(logits).sum(-1, keepdims=True))
  want = -np.mean([0.05 * logp[0, 0] + 0.95 * logp[0, 1], 0.95 * logp[1, 0] + 0.05 * logp[1, 1]])
  assert float(mixup_lib.soft_cross_entropy(logits, targets)) == pytest.approx(want, rel=1e-6)


# ----------------------------------------------------------------------------- evaluation


def test_multi_view_scores_are_softmax_then_mean():
  """eval_scores: each view's softmax, then the mean over a video's views."""
  config = finetune_config.get_config("runlocal")
  config.data.num_classes = 3
  model = tasks.of(config).model(nnx.Rngs(0))
  # A head that separates views: logits depend strongly on the input.
  model.head.kernel[...] = model.head.kernel[...] * 3000.0
  graphdef, params, frozen = nnx.split(model, nnx.Param, ...)
  # Views far apart: each a different flat grey, plus a little noise.
  grey = jnp.arange(6, dtype=jnp.float32).reshape(2, 3, 1, 1, 1, 1) * 45
  noise = jax.random.uniform(jax.random.key(0), (2, 3, 8, 64, 64, 3)) * 10
  video = (grey + noise).astype(jnp.uint8)
  got = np.asarray(steps.eval_scores(params, frozen, video, model=graphdef))
  logits = np.asarray(model(losses.normalize(video.reshape((6, 8, 64, 64, 3)))), np.float64)
  e = np.exp(logits - logits.max(-1, keepdims=True))
  want = (e / e.sum(-1, keepdims=True)).reshape(2, 3, 3).mean(1)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)
  mean_logits = logits.reshape(2, 3, 3).mean(1)
  e = np.exp(mean_logits - mean_logits.max(-1, keepdims=True))
  assert not np.allclose(got, e / e.sum(-1, keepdims=True), atol=1e-3)   # not logits-first


def test_topk_per_class_and_confusion_by_hand():
  probs = np.array([[0.5, 0.3, 0.2],    # label 0: top-1 ✓
                    [0.6, 0.3, 0.1],    # label 1: top-1 ✗, top-2 ✓
                    [0.4, 0.4, 0.2],    # label 1: tie with class 0, lower id wins → ✗
                    [0.1, 0.2, 0.7],    # label 2: ✓
                    [0.9, 0.05, 0.05]])  # invalid: ignored
  labels = np.array([0, 1, 1, 2, 0])
  valid = np.array([True, True, True, True, False])
  s = classification.summarize(probs, labels, valid)
  assert s["top1"] == pytest.approx(2 / 4)
  assert s["top5"] == 1.0                                  # min(5, classes) = 3: all
  np.testing.assert_array_equal(classification.topk_correct(probs[:4], labels[:4], 2),
                                [True, True, True, True])
  assert s["per_class"] == [1.0, 0.0, 1.0]
  assert s["confusion"] == [[1, 0, 0], [2, 0, 0], [0, 0, 1]]
  assert s["class_counts"] == [1, 2, 1] and s["videos"] == 4


# ----------------------------------------------------------------------------- init and runs


def test_init_loads_the_encoder_bit_identical(reference, caplog):
  """A pre-training checkpoint's encoder weights land in the classifier unchanged."""
  config = finetune_config.get_config("runlocal")
  config.init = reference
  mesh = sharding.make_mesh(config, jax.devices()[:1])
  schedule = optim.Schedule(peak=0.0, final=0.0, warmup_steps=0, total_steps=1)
  state, state_sharding, _, _ = state_lib.create_state(config, mesh, schedule)
  head_before = np.asarray(state["params"]["head"]["kernel"][...])
  with caplog.at_level("INFO", logger="amd_jax"):
    state = pretrained.load_init(config, state, state_sharding)
  assert "without its final norm" in caplog.text
  saved = checkpoint.read_tree(os.path.join(checkpoint.find_step_dir(reference), "state"),
                               ("params",))
  source = spec_lib.flatten(saved["params"]["encoder"])
  loaded = spec_lib.flatten(state["params"]["encoder"])
  assert set(loaded) == set(source) - {"norm/scale", "norm/bias"}
  for k, v in loaded.items():
    np.testing.assert_array_equal(np.asarray(v), source[k], err_msg=k)
  np.testing.assert_array_equal(state["params"]["head"]["kernel"][...], head_before)


def test_configs_mirror_tables_s2_s3():
  b_k400 = finetune_config.get_config("data=k400,model=B")
  assert (b_k400.batch_size, b_k400.optim.base_lr, b_k400.optim.epochs) == (1024, 7e-4, 90)
  assert b_k400.data.flip and b_k400.data.test_clips == 5 and b_k400.data.sampler == "span"
  s_ssv2 = finetune_config.get_config("data=ssv2,model=S")
  assert not s_ssv2.data.flip and s_ssv2.data.sampler == "segments"
  assert (s_ssv2.data.test_clips, s_ssv2.data.test_crops) == (2, 3)
  assert s_ssv2.model.drop_path == 0.1 and s_ssv2.optim.b2 == 0.999
  ucf = transfer_config.get_config("data=ucf101")
  assert (ucf.batch_size, ucf.optim.base_lr, ucf.optim.layer_decay) == (256, 5e-4, 0.7)
  assert (ucf.model.drop_path, ucf.model.head_dropout, ucf.data.sampling_rate) == (0.2, 0.5, 4)
  hmdb = transfer_config.get_config("data=hmdb51")
  assert (hmdb.batch_size, hmdb.optim.epochs, hmdb.data.sampling_rate) == (128, 60, 2)


FINETUNE = ("--config=configs/finetune.py:runlocal", "--config.data.split=train[:256]",
            "--config.optim.epochs=2", "--config.evals.val.every=16", "--config.log_every=8",
            "--config.ckpt_every=16", "--config.progress=False",
            "--config.evals.test.split=test[:48]", "--config.evals.val.split=val[:32]")


@pytest.mark.slow
def test_runlocal_finetune_then_standalone_test(reference, tmp_path, env):
  """Fine-tune from the reference pre-training run (32 steps), then test the workdir again
  with mode=test: the same scores."""
  workdir = str(tmp_path / "ft")
  cmd = [sys.executable, "-m", "amd_jax.main", *FINETUNE, f"--workdir={workdir}",
         f"--config.init={reference}"]
  result = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  assert "init: encoder" in result.stderr
  r = rows(workdir)
  train_rows = [x for x in r if "split" not in x]
  assert [x["step"] for x in train_rows] == [8, 16, 24, 32]
  assert all(np.isfinite(x["loss"]) and "accuracy" in x for x in train_rows)
  val = [x for x in r if x.get("split") == "val"]
  assert [x["step"] for x in val] == [16, 32] and all(x["views"] == 1 for x in val)
  assert all(x["videos"] == 32 for x in val)
  (test,) = [x for x in r if x.get("split") == "test"]
  assert test["step"] == 32 and test["views"] == 6 and test["videos"] == 48
  assert 0.0 <= test["top1"] <= test["top5"] <= 1.0
  with open(os.path.join(workdir, "test_results.json")) as f:
    results = json.load(f)
  assert results["top1"] == test["top1"] and len(results["per_class"]) == 8
  assert np.asarray(results["confusion"]).sum() == 48
  scores = np.load(os.path.join(workdir, "test_scores.npz"))
  assert scores["probs"].shape == (48, 8) and scores["valid"].all()
  np.testing.assert_allclose(scores["probs"].sum(-1), 1.0, rtol=1e-5)
  np.testing.assert_array_equal(scores["index"], np.arange(48))

  again = subprocess.run([*cmd, "--config.mode=test"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=600)
  assert again.returncode == 0, again.stderr[-3000:]
  tests = [x for x in rows(workdir) if x.get("split") == "test"]
  assert len(tests) == 2 and tests[1]["top1"] == test["top1"]
  np.testing.assert_allclose(np.load(os.path.join(workdir, "test_scores.npz"))["probs"],
                             scores["probs"], rtol=1e-6)

  # The same classifier converted, then tested from --config.init in an empty workdir.
  converted = str(tmp_path / "converted")
  done = subprocess.run([sys.executable, "-m", "amd_jax.convert", "--src", workdir, "--dst",
                         converted], cwd=ROOT, env=env, capture_output=True, text=True,
                        timeout=300)
  assert done.returncode == 0, done.stderr[-3000:]
  other = str(tmp_path / "other")
  from_init = subprocess.run([sys.executable, "-m", "amd_jax.main", *FINETUNE,
                              f"--workdir={other}", f"--config.init={converted}",
                              "--config.mode=test"], cwd=ROOT, env=env, capture_output=True,
                             text=True, timeout=600)
  assert from_init.returncode == 0, from_init.stderr[-3000:]
  np.testing.assert_allclose(np.load(os.path.join(other, "test_scores.npz"))["probs"],
                             scores["probs"], rtol=1e-5)


def test_mode_test_without_checkpoint_or_init_is_one_line(tmp_path, env):
  cmd = [sys.executable, "-m", "amd_jax.main", *FINETUNE, f"--workdir={tmp_path}",
         "--config.mode=test"]
  result = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
  assert result.returncode == 2
  assert result.stderr.strip().splitlines()[-1].startswith("error: mode=test: no checkpoint")
