"""The step benchmark and the step's optimisations (each equal to the plain version)."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from amd_jax import errors, masking, tasks, tokens
from amd_jax.bench import cli
from amd_jax.bench import step as bench_step
from amd_jax.models import build, vit
from configs import pretrain as pretrain_config
from runs import ROOT

TINY = ["--student", "Mu/8x2", "--teacher", "Mu/8x2", "--frames", "4", "--size", "32",
        "--batch", "2", "--decoder-depth", "1", "--devices", "1"]
FIELDS = {"step_s", "clips_per_s", "gflop_per_clip", "xla_gflop_per_clip", "mfu", "peak_tflops",
          "peak_source", "compile_s", "peak_memory_bytes", "device", "loss"}


def config_of(*argv):
  return bench_step.make_config(cli.parser().parse_args(["step", *argv]))


def test_flop_formula_by_hand():
  """Mu/8x2 (width 64, 4 blocks; decoder 32 wide, 1 block) on 4×32×32: 2×4×4 = 32 tokens,
  per slice 16 − int(0.9·16) = 2 student / 16 − int(0.75·16) = 4 teacher tokens."""
  config = config_of(*TINY)
  _, counts = bench_step.mask_counts(config)
  assert (counts.tokens, counts.student, counts.teacher) == (32, 4, 8)
  tubelet = 2 * 8 * 8 * 3
  layer = lambda n, d: 24 * n * d * d + 4 * n * n * d
  parts = bench_step.flops_per_clip(config, counts)
  assert parts == {
      "encoder": 3 * (2 * 4 * tubelet * 64 + 4 * layer(4, 64)),
      "decoder": 3 * (2 * 4 * 64 * 32 + 1 * layer(32, 32) + 2 * 28 * 32 * tubelet),
      "projections": 3 * 2 * (2 * 4 * 64 * 64),
      "generators": 3 * 2 * 2 * layer(8, 64),
      "teacher": 2 * 8 * tubelet * 64 + 4 * layer(8, 64),
  }
  assert parts["encoder"] == 3 * (196_608 + 4 * (393_216 + 4_096))


@pytest.mark.parametrize("argv, table", [
    (("--mode", "videomae", "--student", "S"), 67),
    (("--mode", "videomae", "--student", "B"), 209),
    (("--student", "S", "--teacher", "L"), 451),
    (("--student", "B", "--teacher", "L"), 593),
    (("--student", "S", "--teacher", "B"), 216),
])
def test_flop_formula_matches_perf_table(argv, table):
  """The table of docs/design.md#flop-accounting embeds all 1568 tubelets (student
  ×2: no input gradient); we count only the tubelets each model sees. With that
  difference added back the formula gives the table's numbers."""
  config = config_of(*argv)
  _, counts = bench_step.mask_counts(config)
  total = sum(bench_step.flops_per_clip(config, counts).values())
  s = vit.decode_variant(config.model.variant)
  embed = lambda n, width: 2 * n * 1536 * width
  total += 2 * embed(counts.tokens, s.width) - 3 * embed(counts.student, s.width)
  if config.mode == "amd":
    t = vit.decode_variant(config.teacher.variant)
    total += embed(counts.tokens - counts.teacher, t.width)
  assert total / 1e9 == pytest.approx(table, abs=0.5)     # the table is rounded to GFLOP


def test_bench_step_prints_json_with_the_torch_reference_and_a_table(tmp_path, capsys):
  """`bench step` lines, then `bench table` over them and a failure line, as
  launch/gpu_check.sh prints last."""
  pytest.importorskip("torch")
  pytest.importorskip("transformers")
  cli.main(["step", *TINY, "--steps", "2", "--warmup", "1", "--reference", "torch"])
  lines = capsys.readouterr().out
  jax_row, torch_row = map(json.loads, lines.strip().splitlines())
  assert FIELDS <= set(jax_row)
  assert jax_row["impl"] == "jax" and torch_row["impl"] == "torch"
  assert jax_row["gflop_per_clip"] == torch_row["gflop_per_clip"] > 0
  assert jax_row["xla_gflop_per_clip"] > 0 and 0 < jax_row["mfu"]
  assert np.isfinite(jax_row["loss"]) and np.isfinite(torch_row["loss"])
  assert torch_row["jax_over_torch_step_s"] > 0

  results = tmp_path / "results.jsonl"
  results.write_text(lines + json.dumps({"label": "amd B/L", "error": "exit 137"}) + "\n")
  cli.main(["table", str(results)])
  header, rule, jax_line, torch_line, failed = capsys.readouterr().out.strip().splitlines()
  assert header.split() == ["mode", "student/teacher", "dtype", "attention", "batch", "step_s",
                            "clips/s", "MFU", "peak", "GiB", "compile_s"]
  assert set(rule) == {"-", " "}
  assert jax_line.split()[:5] == ["amd", "Mu/Mu", "float32", "blocked", "2"]
  assert jax_line.split()[7].endswith("%") and jax_line.split()[8] == "-"  # CPU: no peak memory
  assert torch_line.startswith("amd (torch)")
  assert failed == "amd B/L: FAILED (exit 137)"


def test_bench_table_of_a_missing_file_is_one_line(tmp_path):
  result = subprocess.run([sys.executable, "-m", "amd_jax.bench", "table",
                           str(tmp_path / "none.jsonl")], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
  assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
  assert result.stderr.strip().splitlines() == [
      f"error: {tmp_path / 'none.jsonl'} is not a file: give the JSON lines of "
      "`python -m amd_jax.bench step` runs"]


@pytest.mark.parametrize("content, why", [
    ('{"mode": "amd",\n', 'line 1 is not JSON (Expecting property name enclosed in double '
     'quotes)'),
    ('\n[1, 2]\n', "line 2 is not a `step` result (it needs mode, student, dtype, batch, "
     "step_s, clips_per_s, or label and error)"),
    (b"\xff\xfe\x00binary", "is not text"),
])
def test_bench_table_of_a_file_that_is_no_step_lines_is_one_line(tmp_path, content, why):
  path = tmp_path / "results.jsonl"
  if isinstance(content, bytes):
    path.write_bytes(content)
  else:
    path.write_text(content)
  result = subprocess.run([sys.executable, "-m", "amd_jax.bench", "table", str(path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
  assert result.returncode == 2 and result.stdout == "", result.stderr
  assert result.stderr.splitlines() == [
      f"error: {path} {why}: give the JSON lines that `python -m amd_jax.bench step` prints, "
      "one per line"]


def test_bench_output_paths_are_checked_before_any_model_is_built(tmp_path, capsys):
  (tmp_path / "a_file").write_text("x")
  with pytest.raises(SystemExit) as e:
    cli.main(["checkpoint", *TINY, "--dir", str(tmp_path / "a_file")])
  assert e.value.code == 2 and capsys.readouterr().err.splitlines() == [
      f"error: --dir {tmp_path / 'a_file'} is a file, not a folder: give a folder's path (or "
      "move the file away)"]
  with pytest.raises(SystemExit) as e:
    cli.main(["input", "--dataset", "moving_digits", "--bad_files", str(tmp_path)])
  assert e.value.code == 2 and capsys.readouterr().err.splitlines() == [
      f"error: --bad_files {tmp_path} is a folder: give a file's path"]


def test_bench_step_finetune(capsys):
  """The fine-tuning step, and its PyTorch reference: every token through the encoder,
  FLOPs by hand."""
  pytest.importorskip("transformers")
  cli.main(["step", "--mode", "finetune", "--student", "Mu/8x2", "--frames", "4", "--size",
              "32", "--batch", "2", "--steps", "1", "--warmup", "1", "--devices", "1",
              "--reference", "torch"])
  row, torch_row = map(json.loads, capsys.readouterr().out.strip().splitlines())
  assert torch_row["impl"] == "torch" and np.isfinite(torch_row["loss"])
  assert torch_row["jax_over_torch_step_s"] > 0
  assert FIELDS <= set(row) and row["mode"] == "finetune" and row["teacher"] is None
  n, d = 2 * 4 * 4, 64                                  # tokens, Mu's width; 4 blocks
  encoder = 3 * (2 * n * 384 * d + 4 * (24 * n * d * d + 4 * n * n * d))
  assert row["gflop_parts"]["encoder"] == pytest.approx(encoder / 1e9, abs=1e-3)
  assert row["tokens"] == row["student_tokens"] == n
  assert np.isfinite(row["loss"]) and row["step_s"] > 0


def test_bench_checkpoint_prints_json(tmp_path, capsys):
  cli.main(["checkpoint", *TINY, "--repeats", "1", "--dir", str(tmp_path)])
  row = json.loads(capsys.readouterr().out)
  assert row["bench"] == "checkpoint" and row["params"] > 0
  assert row["state_bytes"] > 4 * 3 * row["params"]          # float32 params + two moments
  assert 0 < row["async_save_s"] <= row["async_commit_s"] and row["sync_save_s"] > 0
  assert os.listdir(tmp_path) == []                           # the checkpoints are deleted


def test_step_compiles_once_and_consumes_its_donated_state():
  config = config_of(*TINY, "--mode", "videomae")
  step = bench_step.build_step(config, jax.devices()[:1])
  state = step.state
  for _ in range(3):
    old = state
    state, metrics = step.fn(state, step.batch, step.teacher_params)
    assert all(x.is_deleted() for x in jax.tree.leaves(old["params"]))
  jax.block_until_ready(metrics)
  assert step.fn._cache_size() == 1


# Optimisations: each against the plain computation it replaces, values and gradients.

def test_attention_equals_dot_product_attention(monkeypatch):
  """The CPU path, 40 queries in 3 blocks; float32 to rounding, bfloat16 to its 8-bit mantissa."""
  monkeypatch.setattr(vit, "CPU_QUERY_BLOCK", 16)
  keys = jax.random.split(jax.random.key(0), 4)
  q, k, v, g = (jax.random.normal(key, (2, 40, 3, 16)) for key in keys)

  def loss(f, dtype):
    return lambda q, k, v: jnp.sum(f(q.astype(dtype), k.astype(dtype), v.astype(dtype))
                                   .astype(jnp.float32) * g)

  def both(f, dtype):
    out = f(q.astype(dtype), k.astype(dtype), v.astype(dtype))
    return out, jax.grad(loss(f, dtype), argnums=(0, 1, 2))(q, k, v)

  for dtype, tol in ((jnp.float32, 1e-5), (jnp.bfloat16, 2e-2)):
    ours, grads = jax.jit(both, static_argnums=(0, 1))(vit.attention, dtype)
    plain, plain_grads = jax.jit(both, static_argnums=(0, 1))(jax.nn.dot_product_attention,
                                                              dtype)
    assert ours.dtype == plain.dtype == dtype
    np.testing.assert_allclose(np.float32(ours), np.float32(plain), atol=tol, rtol=tol)
    for a, b in zip(grads, plain_grads):
      np.testing.assert_allclose(a, b, atol=tol * np.abs(b).max(), rtol=tol)


def test_attention_knob_reaches_every_attention_and_xla_equals_blocked():
  """model.attention and teacher.attention reach every Attention (set after construction);
  on CPU the teacher's features are the same with 'xla' as with 'blocked' (the CPU
  default), float32 to 1e-5. Gradients: test_attention_equals_dot_product_attention."""
  config = config_of(*TINY)
  video = jax.random.normal(jax.random.key(1), (2, 4, 32, 32, 3))
  features = []
  for impl in ("blocked", "xla"):
    config.model.attention = config.teacher.attention = impl
    student = nnx.eval_shape(lambda: tasks.of(config).model(nnx.Rngs(0)))
    teacher = build.teacher(config, nnx.Rngs(0))
    found = [m.implementation for model in (student, teacher)
             for _, m in nnx.iter_modules(model) if isinstance(m, vit.Attention)]
    # Mu/8x2: 4 encoder blocks, 1 decoder block, 2 generators × 2 blocks; the teacher's 4.
    assert found == [impl] * 13
    features.append(nnx.jit(lambda m: m(video)[1])(teacher))
  for a, b in zip(*features):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5 * np.abs(b).max())


def test_attention_backend_overlays_and_refusals():
  cpu, gpu = (pretrain_config.get_config(f"runlocal,backend={b}") for b in ("cpu", "gpu"))
  assert (cpu.model.attention, cpu.teacher.attention) == ("auto", "auto")
  assert (gpu.model.attention, gpu.teacher.attention) == ("cudnn", "cudnn")
  assert gpu.model.dtype == gpu.teacher.dtype == "bfloat16"   # what cuDNN needs
  assert vit.auto_attention(jnp.bfloat16) == vit.auto_attention(jnp.float32) == "blocked"
  with pytest.raises(errors.BadInput, match="unknown attention implementation 'flash'"):
    vit.set_attention(vit.Attention(16, 2, dtype=jnp.float32, rngs=nnx.Rngs(0)), "flash")
  q = jnp.zeros((1, 8, 2, 8))
  with pytest.raises(errors.BadInput, match="needs bfloat16 or float16 inputs, got float32"):
    vit.attention(q, q, q, "cudnn")


def test_embedding_only_seen_tubelets_equals_embedding_all_then_dropping():
  """Encoder.embed gathers tubelets before the patch matmul; float32, to rounding."""
  variant = vit.decode_variant("Mu/8x2")
  encoder = vit.Encoder(variant, num_frames=4, image_size=32, rngs=nnx.Rngs(0))
  video = jax.random.normal(jax.random.key(1), (2, 4, 32, 32, 3))
  codes = np.stack([masking.tube_mask(np.random.default_rng(i), (2, 4, 4), 0.9, 0.75)
                    for i in range(2)])
  idx = masking.indices(jnp.asarray(codes), masking.tube_counts((2, 4, 4), 0.9, 0.75)).teacher
  graphdef, params = nnx.split(encoder)

  def seen(params):
    return nnx.merge(graphdef, params).embed(video, idx)

  def plain(params):
    return tokens.gather_tokens(nnx.merge(graphdef, params).embed(video), idx)

  @jax.jit
  def values_and_grads(params):
    g = jax.random.normal(jax.random.key(2), (2, 8, variant.width))
    return [(f(params), jax.grad(lambda p: jnp.sum(f(p) * g))(params)) for f in (seen, plain)]

  (ours, grads), (expected, plain_grads) = values_and_grads(params)
  np.testing.assert_allclose(ours, expected, rtol=1e-6, atol=1e-6)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5),
               grads, plain_grads)


def test_bfloat16_teacher_features_match_float32():
  """teacher.dtype=bfloat16 (the accelerator overlays): the same float32 weights, features
  to bfloat16's precision (2% of their scale after 4 blocks); the teacher has no gradient."""
  variant = vit.decode_variant("Mu/8x2")
  make = lambda dtype: vit.Encoder(variant, num_frames=4, image_size=32, final_norm=False,
                                   dtype=dtype, rngs=nnx.Rngs(0))
  graphdef16, _ = nnx.split(make(jnp.bfloat16))
  graphdef32, params = nnx.split(make(jnp.float32))
  video = jax.random.normal(jax.random.key(1), (2, 4, 32, 32, 3))

  @jax.jit
  def features(params):
    return [nnx.merge(g, params)(video)[1] for g in (graphdef32, graphdef16)]

  full, half = features(params)
  for a, b in zip(full, half):
    assert b.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.float32(b), a, atol=0.02 * np.abs(a).max())


def test_step_help_shows_every_default():
  out = subprocess.run([sys.executable, "-m", "amd_jax.bench", "step", "--help"], cwd=ROOT,
                       capture_output=True, text=True, check=True).stdout
  for flag, default in (("--frames", "16"), ("--size", "224"), ("--batch", "2"),
                        ("--student-mask", "0.9"), ("--teacher-mask", "0.75"),
                        ("--mode", "amd"), ("--steps", "5")):
    text = " ".join(out.split(flag, 2)[-1].split("--", 1)[0].split())
    assert f"(default: {default})" in text, (flag, text)


def test_step_teacher_defaults_to_the_students_tokens_and_a_mismatch_is_one_line():
  """A teacher is aligned token by token: by default a ViT-B cut like the student
  (B/16x2 failed for a Mu/8x2 student after 17 s of compiling)."""
  config = config_of("--student", "Mu/8x2")
  assert config.teacher.variant == "B/8x2"
  assert config_of("--student", "S").teacher.variant == "B/16x2"
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  proc = subprocess.run([sys.executable, "-m", "amd_jax.bench", "step", "--student", "Mu/8x2",
                         "--teacher", "B/16x2"], cwd=ROOT, env=env, capture_output=True,
                        text=True, timeout=120)
  assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
      "error: --teacher B/16x2 cuts 16×16 patches, tubelet 2; the student Mu/8x2: 8×8, "
      "tubelet 2: AMD aligns them token by token, so they must match"]


STORAGES = ["stored", "short_side 32", "short_side 16", "jpeg 32"]


def compare(tmp_path, capsys, workers: str, sources: str = "2") -> list[str]:
  """`input --compare` on tiny generated videos in tmp_path: its stdout lines."""
  cli.main(["input", "--compare", "--dir", str(tmp_path), "--sources", sources,
            "--seconds", "1", "--source_sizes", "64x48@25,80x64@30", "--short_sides", "32,16",
            "--compare_workers", workers, "--batches", "1", "--videos", "2", "--frames", "4",
            "--size", "64"])
  return capsys.readouterr().out.splitlines()


def check_compare(out: list[str], workers: tuple[int, ...]) -> None:
  """Every storage's JSON line, each benched with each worker count, the table last."""
  rows = [json.loads(line) for line in out if line.startswith("{")]
  facts = [r for r in rows if r["bench"] == "input_storage"]
  assert [r["storage"] for r in facts] == STORAGES
  assert [r["short_side"] for r in facts] == ["48-64", "32", "16", "32"]
  # A clip's 4 frames at least; the videos also get a bare decode of every frame.
  assert all(r["decoded_frames_per_clip"] >= 4 for r in facts)
  assert ["bare_ms_per_reference_frame" in r for r in facts] == [True, True, True, False]
  benched = [(r["storage"], r["workers"]) for r in rows if r["bench"] == "input"]
  assert benched == [(s, w) for s in STORAGES for w in workers]
  assert all(r["videos"] == 2 and r["shapes"]["video"] == [[8, 4, 64, 64, 3], "uint8"]
             for r in rows if r["bench"] == "input")
  table = out[-1 - len(benched):]
  assert table[0].split()[:4] == ["storage", "short", "side", "MB/video"]
  assert [line.split()[0] for line in table[1:]] == [s.split()[0] for s, _ in benched]


def test_bench_input_compare_prints_every_storage_and_a_table(tmp_path, capsys):
  """No timings are checked. The sources stay in --dir for the next run, which must
  ask for the same ones."""
  check_compare(compare(tmp_path, capsys, "0"), (0,))
  check_compare(compare(tmp_path, capsys, "0"), (0,))
  with pytest.raises(SystemExit) as e:
    compare(tmp_path, capsys, "0", sources="3")
  assert e.value.code == 2 and capsys.readouterr().err.splitlines()[-1:] == [
      f"error: --dir {tmp_path} holds sources made with other settings "
      f"({tmp_path / 'sources' / 'settings.json'}): give another --dir, or the same settings"]


@pytest.mark.slow
def test_bench_input_compare_with_workers(tmp_path, capsys):
  check_compare(compare(tmp_path, capsys, "0,1,2"), (0, 1, 2))


def test_bench_input_needs_a_dataset_or_compare(capsys):
  with pytest.raises(SystemExit) as e:
    cli.main(["input"])
  assert e.value.code == 2 and capsys.readouterr().err.splitlines() == [
      "error: bench input: give --dataset (a prepared dataset) or --compare"]
