"""The training program end to end, as a user runs it: CLI, resume, signals, bad input.

Runs are real subprocesses of `python -m amd_jax.main` on one CPU device, with the
runlocal configs shortened to 32 steps. A persistent compilation cache shared by
the runs keeps the repeated compilations cheap.
"""

import contextlib
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from runs import ROOT, assert_same_losses, command, committed_steps, rows, run
from runs import environment as runs_environment


@pytest.mark.slow
def test_runlocal_amd_logs_every_term_and_learns(reference):
  r = rows(reference)
  assert [x["step"] for x in r] == list(range(2, 33, 2))
  for x in r:
    for key in ("loss", "loss_rec", "loss_dir", "loss_gen", "lr", "grad_norm", "clips_per_s"):
      assert np.isfinite(x[key]), (key, x)
    np.testing.assert_allclose(x["loss"], x["loss_rec"] + x["loss_dir"] + x["loss_gen"],
                               rtol=1e-5)
  first, last = r[0]["loss"], np.mean([x["loss"] for x in r[-3:]])
  assert last < 0.6 * first, (first, last)
  assert committed_steps(reference)[-1] == 32
  assert os.listdir(os.path.join(reference, "tensorboard"))


@pytest.fixture(scope="module")
def videomae(tmp_path_factory, env):
  """A VideoMAE runlocal run: checked by itself, then the teacher of an AMD run."""
  workdir = str(tmp_path_factory.mktemp("videomae"))
  result = run(workdir, env, config="configs/videomae.py:runlocal")
  assert result.returncode == 0, result.stderr[-3000:]
  with open(workdir + ".stderr", "w") as f:    # beside the run, for its log's checks
    f.write(result.stderr)
  return workdir


@pytest.mark.slow
def test_runlocal_videomae(videomae):
  r = rows(videomae)
  assert "loss_dir" not in r[0] and "loss_gen" not in r[0]
  with open(videomae + ".stderr") as f:
    log = f.read()
  # No teacher, so no teacher in the log (it said "teacher 28").
  assert "tokens 256, student 28\n" in log and "teacher" not in log
  assert np.mean([x["loss"] for x in r[-3:]]) < r[0]["loss"]


def wait_for(predicate, proc, what, timeout=300):
  deadline = time.time() + timeout
  while not predicate():
    if proc.poll() is not None:
      raise AssertionError(f"run ended (rc {proc.returncode}) before {what}: "
                           f"{proc.stderr.read()[-3000:]}")
    assert time.time() < deadline, f"timed out waiting for {what}"
    time.sleep(0.02)


def start(workdir, env):
  return subprocess.Popen(command(workdir), cwd=ROOT, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)


def logged_step(workdir):
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.exists(path):
    return 0
  r = [json.loads(line) for line in open(path) if line.endswith("\n")]
  return r[-1]["step"] if r else 0


@pytest.mark.slow
def test_sigterm_saves_exits_zero_and_resumes_identically(tmp_path, env, reference):
  workdir = str(tmp_path)
  proc = start(workdir, env)
  wait_for(lambda: logged_step(workdir) >= 10, proc, "step 10")
  proc.send_signal(signal.SIGTERM)
  assert proc.wait(timeout=120) == 0, proc.stderr.read()[-3000:]
  stopped_at = committed_steps(workdir)[-1]
  assert 10 <= stopped_at < 32, stopped_at
  result = run(workdir, env)
  assert result.returncode == 0, result.stderr[-3000:]
  assert f"resumed from step {stopped_at}" in result.stderr
  assert_same_losses(workdir, reference)


def test_ctrl_c_saves_and_exits_zero_and_twice_exits_at_once(tmp_path, env):
  once, twice = str(tmp_path / "once"), str(tmp_path / "twice")
  proc = start(once, env)
  wait_for(lambda: logged_step(once) >= 4, proc, "step 4")
  proc.send_signal(signal.SIGINT)
  assert proc.wait(timeout=120) == 0, proc.stderr.read()[-3000:]
  assert "Traceback" not in proc.stderr.read()
  assert 4 <= committed_steps(once)[-1] < 32
  proc = start(twice, env)
  wait_for(lambda: logged_step(twice) >= 4, proc, "step 4")
  proc.send_signal(signal.SIGINT)
  time.sleep(1)         # two signals sent at once arrive as one: the kernel merges them
  proc.send_signal(signal.SIGINT)
  rc = proc.wait(timeout=30)
  stderr = proc.stderr.read()
  # A second Ctrl-C landing while Python finalises (its handlers reset) kills it by SIGINT.
  assert rc == -signal.SIGINT or (rc == 128 + signal.SIGINT and "exiting at once" in stderr)
  assert "Traceback" not in stderr, stderr[-3000:]


@pytest.mark.slow
def test_sigkill_twice_restarts_from_committed_checkpoints(tmp_path, env, reference):
  workdir = str(tmp_path)
  for target in (8, 16):
    proc = start(workdir, env)
    wait_for(lambda: target in committed_steps(workdir) and logged_step(workdir) > target,
             proc, f"checkpoint {target}")
    proc.kill()
    proc.wait()
  result = run(workdir, env)
  assert result.returncode == 0, result.stderr[-3000:]
  assert "resumed from step" in result.stderr
  assert_same_losses(workdir, reference)


PRETRAIN = "--config=configs/pretrain.py:runlocal"
FINETUNE = "--config=configs/finetune.py:runlocal"


def a_file(tmp_path):
  (tmp_path / "file").write_text("not a directory")
  return tmp_path / "file"


@pytest.mark.parametrize("args, culprit", [
    ([PRETRAIN, "--config.no_such_key=1"], "no_such_key"),
    (["--config=configs/pretrain.py:data=nonsense"], "nonsense"),
    (["--config=configs/pretrain.py:runlocl"], "unknown config argument 'runlocl': known are"),
    ([PRETRAIN, "--config.teacher.init=/no/such/ckpt"], "/no/such/ckpt"),
    (["--config=configs/no_such_config.py"], "no_such_config.py"),
    ([PRETRAIN, "--config.align.method=sideways"], "sideways"),
    ([PRETRAIN, "--config.batch_size=0"], "batch_size=0 must be positive"),
    ([PRETRAIN, "--config.batch_size=-8"], "batch_size=-8 must be positive"),
    ([PRETRAIN, "--config.batch_size=10"], "num_sample × processes = 4 × 1"),
    ([PRETRAIN, "--config.masking.student_ratio=1.0"], "masking.student_ratio=1.0"),
    ([PRETRAIN, "--config.masking.student_ratio=-0.1"], "masking.student_ratio=-0.1"),
    ([PRETRAIN, "--config.masking.teacher_ratio=1.5"], "masking.teacher_ratio=1.5"),
    ([PRETRAIN, "--config.ckpt_every=0"], "ckpt_every=0 must be positive"),
    ([PRETRAIN, "--config.log_every=-1"], "log_every=-1 must be positive"),
    ([PRETRAIN, "--config.total_steps=-1"], "total_steps=-1"),
    ([FINETUNE, "--config.evals.val.every=-5"], "evals.val.every=-5"),
    ([FINETUNE, "--config.evals.test.views=crops"], "evals.test.views='crops'"),
    ([PRETRAIN, "--config.model.dtype=float16"], "model.dtype='float16'"),
    ([PRETRAIN, "--config.teacher.dtype=int8"], "teacher.dtype='int8'"),
    ([PRETRAIN, "--config.align.loss=huber"], "align.loss='huber'"),
])
def test_bad_input_is_one_line(tmp_path, env, args, culprit):
  assert_one_line(tmp_path, env, args, culprit)


def assert_one_line(workdir, env, args, culprit):
  """Exit 2 with one `error:` line naming the culprit, before any data or model."""
  result = subprocess.run([sys.executable, "-m", "amd_jax.main", *args,
                           f"--workdir={workdir}"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
  assert result.returncode == 2, result.stderr[-3000:]
  errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
  assert len(errors) == 1 and culprit in errors[0], result.stderr
  assert "Traceback" not in result.stderr
  assert " steps of " not in result.stderr, "refused only after the data was opened"


def test_a_global_batch_the_devices_cannot_split_is_one_line(tmp_path):
  assert_one_line(tmp_path, runs_environment(devices=8),
                  [PRETRAIN, "--config.batch_size=12"], "batch_size 12 is not divisible by "
                  "the 8 devices")


@pytest.mark.parametrize("where, culprit", [
    (lambda tmp: a_file(tmp), "is a file"),
    (lambda tmp: a_file(tmp) / "run", "cannot be created: Not a directory"),
])
def test_a_workdir_that_cannot_be_one_is_one_line(tmp_path, env, where, culprit):
  assert_one_line(where(tmp_path), env, [PRETRAIN], culprit)


@contextlib.contextmanager
def read_only(path):
  """`path` read-only for this user: mode 0o500, or for root (whom modes do not
  stop) a read-only bind mount of it on itself. Yields the errno text a new
  folder inside it fails with."""
  if os.geteuid() != 0:
    os.chmod(path, 0o500)
    try:
      yield "Permission denied"
    finally:
      os.chmod(path, 0o700)
    return
  subprocess.run(["mount", "--bind", str(path), str(path)], check=True)
  try:
    subprocess.run(["mount", "-o", "remount,ro,bind", str(path)], check=True)
    yield "Read-only file system"
  finally:
    subprocess.run(["umount", str(path)], check=True)


def test_a_read_only_workdir_is_one_line(tmp_path, env):
  with read_only(tmp_path) as why:
    assert_one_line(tmp_path, env, [PRETRAIN], "is not writable")
    assert_one_line(tmp_path / "run", env, [PRETRAIN], why)


@pytest.mark.slow
def test_teacher_from_a_videomae_run(tmp_path, env, videomae):
  """A VideoMAE runlocal workdir serves as the AMD runlocal teacher; a wrong one is refused."""
  result = run(str(tmp_path / "student"), env,
               extra=[f"--config.teacher.init={videomae}", "--config.optim.epochs=1"])
  assert result.returncode == 0, result.stderr[-3000:]
  assert f"loaded from {videomae}" in result.stderr
  bad = run(str(tmp_path / "bad"), env,
            extra=[f"--config.teacher.init={videomae}", "--config.teacher.variant=S/8x2",
                   "--config.optim.epochs=1"])
  assert bad.returncode == 2
  assert "shape" in bad.stderr and "Traceback" not in bad.stderr


@pytest.mark.slow
def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, env):
  workdir = str(tmp_path)
  assert run(workdir, env, extra=["--config.optim.epochs=1"]).returncode == 0  # 8 steps
  assert committed_steps(workdir) == [8]
  # Resumed with an absurd learning rate, the parameters overflow within a step or two.
  result = run(workdir, env, extra=["--config.optim.base_lr=1e30", "--allow_config_change"])
  assert result.returncode == 2, result.stderr[-3000:]
  line = [x for x in result.stderr.splitlines() if x.startswith("error:")]
  assert len(line) == 1 and "at step" in line[0] and "step 8" in line[0], result.stderr
  assert committed_steps(workdir) == [8]
