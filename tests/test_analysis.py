"""Analyses on constructed inputs with hand-computed answers (amd_jax/analysis/)."""

import json
import math
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from matplotlib.backends.backend_agg import FigureCanvasAgg

from amd_jax import convert, errors, masking, metrics
from amd_jax import tokens as tokens_lib
from amd_jax.analysis import attention, curves, per_class, reconstruction
from amd_jax.analysis import __main__ as analysis_cli
from amd_jax.convert import spec as spec_lib
from amd_jax.models import vit
from configs import finetune as finetune_config
from runs import ROOT

# A 2×2 grid of 16-pixel patches: centres (8, 8), (8, 24), (24, 8), (24, 24).
GRID, PATCH, TUBELET = (1, 2, 2), 16, 2
DIAG = 16 * math.sqrt(2)


def test_distances_between_patch_centres():
  d = attention.distance_matrix(GRID, PATCH, TUBELET)
  expected = np.array([[0, 16, 16, DIAG], [16, 0, DIAG, 16],
                       [16, DIAG, 0, 16], [DIAG, 16, 16, 0]])
  np.testing.assert_allclose(d, expected, rtol=1e-6)


def test_time_counts_only_with_a_frame_spacing():
  # Two tubelet slices of one patch: centres at frames 0.5 and 2.5, 2 frames apart.
  grid = (2, 1, 1)
  assert attention.distance_matrix(grid, PATCH, TUBELET)[0, 1] == 0
  assert attention.distance_matrix(grid, PATCH, TUBELET, frame_spacing=10.0)[0, 1] == \
      pytest.approx(20.0)


def test_mean_distance_of_constructed_attention():
  d = jnp.asarray(attention.distance_matrix(GRID, PATCH, TUBELET))
  itself = np.eye(4)
  uniform = np.full((4, 4), 0.25)
  opposite = np.eye(4)[[3, 2, 1, 0]]          # each token attends to the diagonal one
  # Query 0 half on itself, half on its right neighbour; the others on themselves.
  mixed = np.eye(4)
  mixed[0] = [0.5, 0.5, 0, 0]
  attn = jnp.asarray(np.stack([[itself, uniform], [opposite, mixed]]))   # (B=2, heads=2, 4, 4)
  got = np.asarray(attention.mean_distance(attn, d))
  # uniform: every query sees distances 0, 16, 16, 16√2 → their mean; mixed: (0.5·16)/4.
  np.testing.assert_allclose(got, [[0.0, (32 + DIAG) / 4], [DIAG, 8.0 / 4]], rtol=1e-6)


def _block(key=0):
  block = vit.Block(64, 2, 128, rngs=nnx.Rngs(key))
  k1, k2 = jax.random.split(jax.random.key(key + 1))
  block.attn.q_bias[...] = jax.random.normal(k1, (64,))
  block.attn.v_bias[...] = jax.random.normal(k2, (64,))
  return block


def test_attention_probs_reproduce_the_block():
  """probs @ v through proj equals the block's own (fused) attention: the sown
  probabilities are the ones the block attends with."""
  block = _block()
  x = jax.random.normal(jax.random.key(3), (2, 10, 64))
  _, found = nnx.capture(block, nnx.Intermediate)(x, probs=True)
  probs = found["attn"]["probs"].get_value()[0]
  assert probs.shape == (2, 2, 10, 10)
  np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-5)
  h = block.norm1(x)
  v = (h @ block.attn.qkv.kernel[...][:, 128:] + block.attn.v_bias[...]).reshape(2, 10, 2, 32)
  y = jnp.einsum("bhqk,bkhd->bqhd", probs, v).reshape(2, 10, 64)
  np.testing.assert_allclose(block.attn.proj(y), block.attn(h), atol=1e-5)


def test_uniform_attention_gives_the_mean_distance():
  """Zero query weights: every head attends uniformly, at every layer."""
  encoder = vit.Encoder(vit.decode_variant("Mu/16x2"), num_frames=2, image_size=32,
                        rngs=nnx.Rngs(0))
  for block in encoder.blocks.layers:
    block.attn.qkv.kernel[...] = block.attn.qkv.kernel[...].at[:, :64].set(0.0)
  videos = np.random.default_rng(0).integers(0, 256, (3, 2, 32, 32, 3), np.uint8)
  d = attention.attention_distance(encoder, videos, batch=2)
  assert d.shape == (4, 2)                  # Mu: 4 layers, 2 heads
  np.testing.assert_allclose(d, (32 + DIAG) / 4, rtol=1e-5)


def test_unpatchify_inverts_patchify():
  video = np.random.default_rng(0).random((2, 4, 16, 24, 3), np.float32)
  tokens = np.asarray(tokens_lib.patchify(jnp.asarray(video), 8, 2))
  np.testing.assert_array_equal(reconstruction.unpatchify(tokens, (2, 2, 3), 8, 2), video)


def test_zero_prediction_shows_the_true_patch_means():
  """De-normalisation: a prediction of 0 maps to the masked patch's own per-channel mean."""
  rng = np.random.default_rng(0)
  videos = rng.integers(0, 256, (1, 2, 16, 16, 3), np.uint8)
  codes = masking.tube_mask(rng, (1, 2, 2), 0.5)[None]       # 2 of 4 tubes hidden
  out = reconstruction.reconstruct(None, videos, codes, 8, 2)
  rgb = videos / 255.0
  for i, code in enumerate(codes[0]):
    y, x = divmod(i, 2)
    patch, got = (v[0, :, 8 * y:8 * y + 8, 8 * x:8 * x + 8] for v in (rgb, out))
    if code == masking.STUDENT:
      np.testing.assert_allclose(got, patch, atol=1e-6)
    else:
      np.testing.assert_allclose(got, np.broadcast_to(patch.mean((0, 1, 2)), patch.shape),
                                 atol=1e-6)


def test_per_class_report(tmp_path):
  runs = {}
  for name, accuracy in (("a", [1.0, 0.5, 0.25, None]), ("b", [0.5, 0.75, 0.25, None])):
    run = tmp_path / name
    run.mkdir()
    (run / "test_results.json").write_text(json.dumps(dict(
        top1=0.6, top5=1.0, views=6, per_class=accuracy, class_counts=[4, 4, 4, 0])))
    runs[name] = str(run)
  report = per_class.per_class_report(runs["a"], runs["b"], str(tmp_path / "out"))
  # Sorted by b − a, largest first: +0.25, 0, −0.5, then the class without videos.
  assert [r["index"] for r in report["classes"]] == [1, 2, 0, 3]
  assert [r["difference"] for r in report["classes"]] == [0.25, 0.0, -0.5, None]
  assert os.path.getsize(tmp_path / "out" / "per_class.png") > 0
  top = per_class.per_class_report(runs["a"], runs["b"], str(tmp_path / "out"), top=2)
  assert [r["index"] for r in top["classes"]] == [1, 0]


def test_neighbour_copy_by_hand():
  """Grid 2 time slices × 1 × 3: per slice the student sees token x=0 only; masked
  tokens take the target of the nearest visible token of their own slice, in
  masking.indices' order (ascending token index), so they line up with its targets."""
  grid = (2, 1, 3)
  targets = np.arange(6, dtype=np.float32).reshape(1, 6, 1) * 10      # token i → 10·i
  s, d, h = masking.STUDENT, masking.DIFF, masking.HIDDEN
  codes = np.array([[s, h, d, d, s, h]])
  got = reconstruction.neighbour_copy(targets, codes, grid)
  # masked tokens 1, 2 (slice 0, nearest visible 0) and 3 (slice 1: 4 at distance 1), 5 (4)
  np.testing.assert_array_equal(got[0, :, 0], [0, 0, 40, 40])
  counts = masking.MaskCounts(tokens=6, student=2, teacher=4)
  idx = masking.indices(jnp.asarray(codes), counts)
  np.testing.assert_array_equal(np.asarray(idx.masked)[0], [1, 2, 3, 5])


def test_masked_pixel_losses_by_hand():
  """Grid 1 × 2 × 2 of 8-pixel patches, tubelet 2, one colour whose light flickers ±5
  grey levels between the two frames; the student sees tube 0. Normalised per patch
  and channel (128 pixels, unbiased std + 1e-6), every tube's target is the same:
  copying the visible one is exact, and predicting 0 costs the target's mean square
  (the 1e-6 on the std counts here), as a model that predicts 0 ("blank") does."""
  video = np.full((1, 2, 16, 16, 3), 100, np.uint8)
  video[:, 0] += 5
  video[:, 1] -= 5
  s, h = masking.STUDENT, masking.HIDDEN
  codes = np.array([[s, h, h, h]])
  blank = lambda video, idx: {"pred": np.zeros(idx.masked.shape + (8 * 8 * 2 * 3,))}
  losses = reconstruction.masked_pixel_losses({"blank": blank}, video, codes, 8, 2)
  assert list(losses) == [*reconstruction.TRIVIAL, "blank"]
  amplitude = 5 / 255
  assert losses["zero"] == pytest.approx(
      amplitude ** 2 / (amplitude * math.sqrt(128 / 127) + 1e-6) ** 2, rel=1e-5)
  assert losses["neighbour_copy"] == pytest.approx(0, abs=1e-6)
  assert losses["blank"] == pytest.approx(losses["zero"], rel=1e-6)


def test_reconstructions_of_a_finetuning_run_is_one_line(tmp_path, env):
  """A fine-tuning workdir (its config.json as training writes it) is refused by name
  before any checkpoint or clip is read."""
  run = tmp_path / "ft"
  run.mkdir()
  (run / "config.json").write_text(finetune_config.get_config("runlocal").to_json_best_effort())
  result = subprocess.run([sys.executable, "-m", "amd_jax.analysis", "reconstructions",
                           "--run", f"ft={run}", "--out", str(tmp_path / "out")], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=300)
  lines = [l for l in result.stderr.splitlines() if l.strip()]
  assert result.returncode == 2 and len(lines) == 1, result.stderr[-3000:]
  assert lines[0] == (f"error: reconstructions needs a pre-training run (mode amd or videomae): "
                      f"ft={run} is a finetune run, which has no pixel decoder")
  assert not (tmp_path / "out").exists()


def test_reconstructions_at_another_mask_ratio_from_the_command_line(tmp_path, env):
  """The released teacher at half its tubes hidden, on the release's 64 videos (one
  shown): the masks the trivial predictors see change (copying the nearest visible
  patch gets closer than at the committed release's 0.9), and a teacher ratio that is
  not below the student's is one line."""
  teacher = os.path.join(ROOT, "amd_jax", "proj", "study", "teacher")
  command = [sys.executable, "-m", "amd_jax.analysis", "reconstructions", "--run",
             f"teacher={teacher}/checkpoint", "--show", "1", "--out", str(tmp_path / "out")]
  result = subprocess.run(command + ["--mask-ratio", "0.5", "--teacher-mask-ratio", "0.25"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  report = json.loads((tmp_path / "out" / "reconstructions.json").read_text())
  assert (report["student_ratio"], report["teacher_ratio"]) == (0.5, 0.25)
  with open(os.path.join(teacher, "reconstructions.json")) as f:
    release = json.load(f)
  assert (release["student_ratio"], release["videos"]) == (0.9, report["videos"])
  assert report["loss"]["neighbour_copy"] < release["loss"]["neighbour_copy"] - 0.05
  bad = subprocess.run(command[:-2] + ["--out", str(tmp_path / "bad"), "--mask-ratio", "0.5"],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
  lines = [l for l in bad.stderr.splitlines() if l.strip()]
  assert bad.returncode == 2 and len(lines) == 1, bad.stderr[-3000:]
  assert "teacher mask ratio 0.75 must hide fewer tokens than the student's 0.5" in lines[0]
  assert not (tmp_path / "bad").exists()


def test_reconstructions_score_the_videos_asked_for_and_print_the_losses(tmp_path, capsys):
  """--videos is what is scored (and at most what the figure shows): 2 videos, not 64,
  and the losses of the model and of the trivial predictors are printed."""
  teacher = os.path.join(ROOT, "amd_jax", "proj", "study", "teacher", "checkpoint")
  out = tmp_path / "out"
  analysis_cli.main(["reconstructions", "--run", f"teacher={teacher}", "--videos", "2",
                     "--out", str(out)])
  report = json.loads((out / "reconstructions.json").read_text())
  assert report["videos"] == 2 and report["shown"] == 2
  lines = capsys.readouterr().out.splitlines()
  assert lines == [
      f"teacher: masked-pixel loss {report['loss']['teacher']:.4f} on 2 {report['data']}:test "
      "videos (90% of tubes hidden)",
      "trivial predictors: " + ", ".join(f"{k} {report['loss'][k]:.4f}"
                                         for k in ("zero", "neighbour_copy")),
      f"wrote {out}"]
  with pytest.raises(SystemExit) as e:
    analysis_cli.main(["reconstructions", "--run", f"teacher={teacher}", "--videos", "2",
                       "--show", "3", "--out", str(tmp_path / "more")])
  assert e.value.code == 2 and capsys.readouterr().err.splitlines() == [
      "error: --show 3 is more than --videos 2: the figure shows clips that are scored"]
  with pytest.raises(SystemExit):
    analysis_cli.main(["reconstructions", "--run", f"teacher={teacher}", "--show", "0",
                       "--out", str(tmp_path / "none")])
  assert capsys.readouterr().err.splitlines() == [
      "error: --show 0: the figure shows at least one clip"]


def test_an_out_that_is_a_file_is_one_line_before_anything_is_read(tmp_path, env):
  """--out is checked first: no clip is read (the dataset's progress bar) and no model
  loaded before the refusal, and the file is left as it was."""
  (tmp_path / "a_file").write_text("x")
  teacher = os.path.join(ROOT, "amd_jax", "proj", "study", "teacher", "checkpoint")
  result = subprocess.run([sys.executable, "-m", "amd_jax.analysis", "reconstructions",
                           "--run", f"teacher={teacher}", "--videos", "2",
                           "--out", str(tmp_path / "a_file")], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
  assert result.returncode == 2 and result.stdout == "", result.stderr[-3000:]
  assert result.stderr.splitlines() == [
      f"error: --out {tmp_path / 'a_file'} is a file, not a folder: give a folder's path (or "
      "move the file away)"]
  assert (tmp_path / "a_file").read_text() == "x"


@pytest.mark.parametrize("command", [
    ["attention-distance", "--checkpoint", "RUN"], ["per-class", "--a", "RUN", "--b", "RUN"],
    ["curves", "--run", "RUN"], ["reconstructions", "--run", "RUN"],
    ["probe", "--checkpoint", "RUN"]])
def test_every_analysis_checks_its_out_first(tmp_path, capsys, command):
  """Every command's --out, refused before its runs are looked at (RUN does not exist,
  which would be another error); a missing --out is not made by a refusal."""
  (tmp_path / "a_file").write_text("x")
  out = tmp_path / "a_file" / "out"
  with pytest.raises(SystemExit) as e:
    analysis_cli.main([*command, "--out", str(out)])
  assert e.value.code == 2
  assert capsys.readouterr().err.splitlines() == [
      f"error: --out {out} cannot be created: Not a directory ({tmp_path / 'a_file'} is a "
      "file): give a path under a folder"]
  with pytest.raises(SystemExit):
    analysis_cli.main([*command, "--out", str(tmp_path / "new" / "out")])
  assert "RUN" in capsys.readouterr().err and not (tmp_path / "new").exists()


def test_reconstructions_of_a_classifier_checkpoint_is_refused(tmp_path):
  """A converted classifier (no config.json to tell) is refused once loaded."""
  spec = spec_lib.ModelSpec(task="classifier", variant=vit.decode_variant("Mu/8x2"),
                            num_frames=4, image_size=(32, 32), num_classes=3,
                            fc_norm_eps=1e-6)
  rng = np.random.default_rng(0)
  weights = {k: rng.standard_normal(shape).astype(np.float32)
             for k, shape in spec.shapes().items()}
  path = str(tmp_path / "classifier")
  convert.writers.write_orbax(path, spec, weights, source="test")
  with pytest.raises(errors.BadInput, match=r"needs a pre-training checkpoint: c=.* holds a "
                     "Classifier"):
    reconstruction.reconstructions_report({"c": path}, str(tmp_path / "out"))


def _metrics(run, rows):
  run.mkdir()
  (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
  return str(run)


def _plots_with_legends(tmp_path):
  """Every plot that draws a legend, on constructed inputs: name → its (closed) figure."""
  steps = range(0, 40, 10)
  pre = {name: _metrics(tmp_path / f"pre_{name}", [
      dict(step=s, loss=1 / (s + 1), loss_rec=0.9, loss_dir=10 / (s + 1), loss_gen=50 / (s + 1))
      for s in steps]) for name in ("amd", "videomae")}
  ft = {name: _metrics(tmp_path / f"ft_{name}", [
      *(dict(step=s, loss=2 / (s + 1)) for s in steps),
      *(dict(step=s, split="val", top1=s / 40) for s in steps),
      dict(step=40, split="test", top1=0.9, views=6)]) for name in ("amd", "videomae")}
  report = dict(names=["a", "b"], top1={"a": 0.5, "b": 0.75}, classes=[
      dict(cls=f"class {i}", a=1.0 - i / 8, b=1.0, difference=i / 8) for i in range(8)])
  distances = {"teacher": np.linspace(4, 30, 12 * 3).reshape(12, 3),
               "student": np.linspace(4, 30, 4 * 2).reshape(4, 2)}
  return {
      "attention_distance": attention.plot_attention_distance(
          distances, str(tmp_path / "ad.png"), "note", {"teacher": 28.0, "student": 28.0}),
      "per_class": per_class.plot_per_class(report, str(tmp_path / "pc.png")),
      "pretrain_losses": curves.plot_pretrain_losses(pre, str(tmp_path / "pl.png")),
      "finetune_curves": curves.plot_finetune_curves(ft, str(tmp_path / "fc.png")),
  }


def test_legends_cover_no_data(tmp_path):
  """Each legend lies outside every panel (where bars, dots and curves are drawn); the
  attention-distance colours are explained by a labelled colour bar."""
  for name, fig in _plots_with_legends(tmp_path).items():
    canvas = FigureCanvasAgg(fig)     # a closed figure keeps no canvas of its own
    canvas.draw()
    renderer = canvas.get_renderer()
    legends = fig.legends + [ax.get_legend() for ax in fig.axes if ax.get_legend()]
    assert legends, name
    panels = [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]
    for legend in legends:
      box = legend.get_window_extent(renderer)
      for ax in panels:
        assert not box.overlaps(ax.get_window_extent(renderer)), (name, ax.get_title())
    assert os.path.getsize(tmp_path / {"attention_distance": "ad.png", "per_class": "pc.png",
                                       "pretrain_losses": "pl.png",
                                       "finetune_curves": "fc.png"}[name]) > 0
    if name == "attention_distance":
      (bar,) = [ax for ax in fig.axes if ax.get_label() == "<colorbar>"]
      assert bar.get_ylabel() == "attention head"
      assert [t.get_text() for t in bar.get_yticklabels()] == ["1", "2", "3"]


def test_curves_tell_pretraining_from_finetuning_and_print_the_last_numbers(tmp_path, capsys):
  """The run kind comes from config.json's mode (else from what metrics.jsonl holds): a
  fine-tuning run gets the fine-tuning curves without a flag, a pre-training run the
  losses, both kinds at once each their own figure; the last numbers are printed."""
  ft = _metrics(tmp_path / "ft", [dict(step=10, loss=2.0), dict(step=20, loss=1.5),
                                  dict(step=20, split="val", top1=0.5),
                                  dict(step=20, split="test", top1=0.625, views=6)])
  (tmp_path / "ft" / "config.json").write_text(json.dumps({"mode": "finetune"}))
  out = tmp_path / "out"
  analysis_cli.main(["curves", "--run", f"ft={ft}", "--out", str(out)])
  assert sorted(os.listdir(out)) == ["finetune_curves.png"]
  assert capsys.readouterr().out.splitlines() == [
      "ft: fine-tuning, step 20: loss 1.5000, val top-1 0.500, test top-1 0.625 (6 views)",
      f"wrote {out}"]
  # The released teacher has no config.json: its loss_rec rows say pre-training.
  teacher = os.path.join(ROOT, "amd_jax", "proj", "study", "teacher")
  both = tmp_path / "both"
  analysis_cli.main(["curves", "--run", f"teacher={teacher}", "--run", f"ft={ft}",
                     "--out", str(both)])
  assert sorted(os.listdir(both)) == ["finetune_curves.png", "pretrain_losses.png"]
  last = metrics.read_rows(teacher)[-1]
  assert capsys.readouterr().out.splitlines()[0] == (
      f"teacher: pre-training, step {last['step']}: loss {last['loss']:.4f}, "
      f"loss_rec {last['loss_rec']:.4f}")


@pytest.mark.parametrize("make, message", [
    (lambda run: None, "error: curves: run r={run} does not exist"),
    (lambda run: run.mkdir(), "error: curves: r={run} has no metrics.jsonl: not a training "
     "run's workdir, or it has logged nothing yet"),
    (lambda run: _metrics(run, [dict(step=1, lr=0.1)]), "error: curves: cannot tell whether "
     "r={run} is pre-training or fine-tuning: its config.json has no mode and its "
     "metrics.jsonl neither loss_rec nor top1"),
])
def test_curves_of_a_run_that_is_not_there_is_one_line(tmp_path, capsys, make, message):
  run = tmp_path / "run"
  make(run)
  with pytest.raises(SystemExit) as e:
    analysis_cli.main(["curves", "--run", f"r={run}", "--out", str(tmp_path / "out")])
  assert e.value.code == 2
  assert capsys.readouterr().err.splitlines() == [message.format(run=run)]
  assert not (tmp_path / "out").exists()
