"""A workdir's integrity, as a user meets it: one run at a time, no silent config change,
damaged checkpoints set aside, a failed save stopping in one line."""

import glob
import json
import os
import shutil
import signal
import socket
import subprocess
import sys

import pytest

from amd_jax import config_files, errors, paths, pretrained
from amd_jax import workdir as workdir_lib

from runs import ROOT, assert_same_losses, command, committed_steps, run
from test_train import read_only, wait_for


def one_error(result):
  lines = [x for x in result.stderr.splitlines() if x.startswith("error:")]
  assert result.returncode == 2 and len(lines) == 1, result.stderr[-3000:]
  assert "Traceback" not in result.stderr
  return lines[0]


def test_a_held_workdir_is_refused_and_a_dead_holder_does_not_block(tmp_path, env):
  workdir = str(tmp_path)
  first = subprocess.Popen(command(workdir), cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE, text=True)
  lock = os.path.join(workdir, "run.lock")
  wait_for(lambda: os.path.exists(lock) and f"pid {first.pid}" in open(lock).read(), first,
           "the lock")
  try:
    line = one_error(run(workdir, env))
    assert f"in use by pid {first.pid} on host {socket.gethostname()}" in line, line
  finally:
    first.send_signal(signal.SIGKILL)       # leaves run.lock behind, naming a dead pid
    first.wait()
  again = run(workdir, env)
  assert again.returncode == 0, again.stderr[-3000:]
  assert committed_steps(workdir)[-1] == 32


def test_resuming_with_another_config_is_refused_unless_allowed(tmp_path, env, reference):
  workdir = str(tmp_path / "run")
  shutil.copytree(reference, workdir)
  saved = open(os.path.join(workdir, "config.json")).read()
  changed = ["--config.optim.base_lr=0.2", "--config.seed=3"]
  line = one_error(run(workdir, env, extra=changed))
  assert "optim.base_lr (0.1 → 0.2)" in line and "seed (0 → 3)" in line, line
  assert "--allow_config_change" in line
  assert open(os.path.join(workdir, "config.json")).read() == saved   # nothing overwritten
  # Where and how often a run logs is free; the finished run just ends again.
  assert run(workdir, env, extra=["--config.log_every=4"]).returncode == 0
  allowed = run(workdir, env, extra=[*changed, "--allow_config_change"])
  assert allowed.returncode == 0, allowed.stderr[-3000:]
  assert "resuming with a changed config" in allowed.stderr
  assert '"seed": 3' in open(os.path.join(workdir, "config.json")).read()


def data_file(step):
  """The largest tensor data file of a step (orbax's OCDBT layout, one folder per process)."""
  files = glob.glob(os.path.join(step, "state", "ocdbt.process_*", "d", "*"))
  return max(files, key=os.path.getsize)


def truncate(path):
  with open(path, "r+b") as f:
    f.truncate(os.path.getsize(path) // 2)


DAMAGE = {
    "truncated data file": lambda step: truncate(data_file(step)),
    "truncated _METADATA": lambda step: truncate(os.path.join(step, "state", "_METADATA")),
    "corrupt iterator JSON": lambda step: open(os.path.join(step, "data", "process_0.json"),
                                               "w").write("{not json"),
    "missing state": lambda step: shutil.rmtree(os.path.join(step, "state")),
}


def test_damaged_checkpoints_are_moved_aside_and_none_left_is_one_line(tmp_path, env, reference):
  """A kind of damage on each step: each is named and moved aside; with none left, exit 2."""
  workdir = str(tmp_path / "run")
  shutil.copytree(reference, workdir)
  ckpts = os.path.join(workdir, "checkpoints")
  newest = committed_steps(workdir)         # e.g. [16, 24, 32]: one step per damage below
  kinds = ["corrupt iterator JSON", "missing state", "truncated _METADATA"]
  assert len(newest) >= len(kinds), newest
  for kind, step in zip(kinds, reversed(newest)):
    DAMAGE[kind](os.path.join(ckpts, str(step)))
  result = run(workdir, env)
  # Every step damaged: one line, exit 2, all of them kept aside.
  line = one_error(result)
  assert "no checkpoint" in line and "restores" in line, line
  warned = [x for x in result.stderr.splitlines() if "is damaged" in x]
  assert len(warned) == len(kinds), result.stderr[-3000:]
  assert sorted(d for d in os.listdir(ckpts) if d.endswith(".damaged")) == sorted(
      f"{s}.damaged" for s in newest)


def test_a_truncated_data_file_falls_back_one_step(tmp_path, env, reference):
  workdir = str(tmp_path / "run")
  shutil.copytree(reference, workdir)
  steps = committed_steps(workdir)
  DAMAGE["truncated data file"](os.path.join(workdir, "checkpoints", str(steps[-1])))
  result = run(workdir, env)
  assert result.returncode == 0, result.stderr[-3000:]
  assert f"checkpoint step {steps[-1]} is damaged" in result.stderr
  assert f"resumed from step {steps[-2]}" in result.stderr
  assert committed_steps(workdir)[-1] == steps[-1]          # trained again up to the end
  assert os.path.isdir(os.path.join(workdir, "checkpoints", f"{steps[-1]}.damaged"))


# Files over 4 MB cannot be written (EFBIG: Python ignores SIGXFSZ): a disk that fills
# up at the first checkpoint tensor, which a full disk's ENOSPC would hit the same way.
# Set by the shell (ulimit -f counts KiB) rather than a preexec_fn, which would fork
# this multithreaded JAX process.
SMALL_FILES_ONLY = ["bash", "-c", 'ulimit -f 4096 && exec "$@"', "bash"]


@pytest.mark.slow
def test_a_failed_save_stops_the_run_in_one_line_and_a_restart_resumes_exactly(
    tmp_path, env, reference):
  workdir = str(tmp_path / "run")
  shutil.copytree(reference, workdir)
  *later, first = sorted(committed_steps(workdir), reverse=True)
  for step in later:
    shutil.rmtree(os.path.join(workdir, "checkpoints", str(step)))
  full = subprocess.run(SMALL_FILES_ONLY + command(workdir), cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=600)
  assert full.returncode == 1, full.stderr[-3000:]
  lines = [x for x in full.stderr.splitlines() if x.startswith("error:")]
  assert len(lines) == 1 and "Traceback" not in full.stderr, full.stderr[-3000:]
  assert (f"saving checkpoint step {first + 8}" in lines[0] and "File too large (errno 27)"
          in lines[0] and f"intact (step {first})" in lines[0]), lines[0]
  assert committed_steps(workdir) == [first]
  freed = run(workdir, env)
  assert freed.returncode == 0, freed.stderr[-3000:]
  assert f"resumed from step {first}" in freed.stderr
  assert_same_losses(workdir, reference)


def test_convert_and_load_name_a_damaged_step_and_read_the_one_before(tmp_path, reference):
  workdir = str(tmp_path / "run")
  shutil.copytree(reference, workdir)
  *older, newest = committed_steps(workdir)
  # Not a data file: the one truncated may hold only optimiser state, which a reader skips.
  DAMAGE["truncated _METADATA"](os.path.join(workdir, "checkpoints", str(newest)))
  result = subprocess.run([sys.executable, "-m", "amd_jax.convert", "--src", workdir, "--dst",
                           str(tmp_path / "out"), "--no_progress"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  warned = [x for x in result.stderr.splitlines() if "is damaged" in x]
  assert len(warned) == 1 and f"step {newest} is damaged" in warned[0], result.stderr
  assert f"reading step {older[-1]}" in warned[0]
  assert os.path.isdir(os.path.join(workdir, "checkpoints", str(newest)))   # left in place
  for step in older:
    DAMAGE["missing state"](os.path.join(workdir, "checkpoints", str(step)))
  with pytest.raises(errors.BadInput, match="no checkpoint step reads"):
    pretrained.load(workdir)


@pytest.mark.parametrize("url", ["gs://bucket/run", "s3://bucket/run", "file:///tmp/run"])
def test_a_url_workdir_is_refused_in_one_line_and_nothing_is_made(tmp_path, monkeypatch, url):
  """The lock is an flock on a local file and metrics/config are plain file writes:
  os.makedirs("gs://bucket/run") would make ./gs:/bucket/run and train there."""
  monkeypatch.chdir(tmp_path)
  with pytest.raises(errors.BadInput, match="is a URL") as e:
    workdir_lib.check(url)
  assert "\n" not in str(e.value) and "mounted on every host" in str(e.value)
  assert os.listdir(tmp_path) == []


def test_training_refuses_a_url_workdir_before_anything_runs(tmp_path, env):
  result = subprocess.run(
      [sys.executable, "-m", "amd_jax.main",
       f"--config={os.path.join(ROOT, 'configs', 'pretrain.py')}:runlocal",
       "--workdir=gs://bucket/run"], cwd=tmp_path, env=env, capture_output=True, text=True,
      timeout=120)
  assert "gs://bucket/run is a URL" in one_error(result)
  assert os.listdir(tmp_path) == []


# ------------------------------------------------- every command's output paths (paths.py)

def refused(call, *args, **kw) -> str:
  with pytest.raises(errors.BadInput) as e:
    call(*args, **kw)
  assert "\n" not in str(e.value)
  return str(e.value)


def test_an_output_folder_is_made_or_refused_in_one_line(tmp_path):
  (tmp_path / "a_file").write_text("x")
  paths.output_dir(str(tmp_path / "new" / "deeper"), "--out")        # parents included
  assert (tmp_path / "new" / "deeper").is_dir()
  assert refused(paths.output_dir, str(tmp_path / "a_file"), "--out") == (
      f"--out {tmp_path / 'a_file'} is a file, not a folder: give a folder's path (or move "
      "the file away)")
  assert refused(paths.output_dir, str(tmp_path / "a_file" / "sub" / "out"), "--out") == (
      f"--out {tmp_path / 'a_file' / 'sub' / 'out'} cannot be created: Not a directory "
      f"({tmp_path / 'a_file'} is a file): give a path under a folder")
  assert "--out gs://b/run is a URL" in refused(paths.output_dir, "gs://b/run", "--out")
  assert (tmp_path / "a_file").read_text() == "x"
  # A trial only: proved makeable, nothing left behind (the command makes it later).
  paths.output_dir(str(tmp_path / "trial" / "out"), "--out", create=False)
  assert not (tmp_path / "trial").exists()


def test_an_uncreatable_or_unwritable_output_is_one_line(tmp_path):
  (tmp_path / "ro").mkdir()
  with read_only(tmp_path / "ro") as why:
    assert refused(paths.output_dir, str(tmp_path / "ro"), "--dir") == (
        f"--dir {tmp_path / 'ro'} is not writable: give a path you can write to")
    line = refused(paths.output_dir, str(tmp_path / "ro" / "new"), "--dir")
    assert line.startswith(f"--dir {tmp_path / 'ro' / 'new'} cannot be created: {why}"), line
    assert refused(paths.output_file, str(tmp_path / "ro" / "x.txt"), "--bad_files") == (
        f"--bad_files {tmp_path / 'ro' / 'x.txt'} cannot be written: its folder "
        f"{tmp_path / 'ro'} is not writable: give a path you can write to")


def test_an_output_file_gets_its_folder_and_is_no_folder(tmp_path):
  (tmp_path / "a_file").write_text("x")
  paths.output_file(str(tmp_path / "new" / "bad_files.txt"), "--bad_files")
  assert (tmp_path / "new").is_dir() and not (tmp_path / "new" / "bad_files.txt").exists()
  paths.output_file(str(tmp_path / "a_file"), "--bad_files")            # appended to: fine
  assert refused(paths.output_file, str(tmp_path / "new"), "--bad_files") == (
      f"--bad_files {tmp_path / 'new'} is a folder: give a file's path")
  assert "Not a directory" in refused(paths.output_file, str(tmp_path / "a_file" / "x.txt"),
                                      "--bad_files")
  # A new output (convert's --dst, a release): nothing may be there yet.
  assert refused(paths.new_output, str(tmp_path / "a_file"), "--dst") == (
      f"--dst {tmp_path / 'a_file'} exists: choose another path or remove it")
  paths.new_output(str(tmp_path / "more" / "x.pth"), "--dst")
  assert (tmp_path / "more").is_dir()


def test_a_workdir_is_checked_by_the_same_rule(tmp_path):
  (tmp_path / "a_file").write_text("x")
  assert refused(workdir_lib.check, str(tmp_path / "a_file")).startswith(
      f"workdir {tmp_path / 'a_file'} is a file")
  assert "cannot be created: Not a directory" in refused(
      workdir_lib.check, str(tmp_path / "a_file" / "run"))
  workdir_lib.check(str(tmp_path / "runs" / "demo"))
  assert (tmp_path / "runs" / "demo").is_dir()


def test_a_run_from_before_named_evaluations_resumes(tmp_path):
  """A fine-tuning workdir whose config.json has eval_every and data.val_split /
  test_split (before config.evals) resumes with today's config: only where its
  evaluations are set moved."""
  config = config_files.load("finetune", "runlocal")
  old = json.loads(config.to_json_best_effort())
  del old["evals"]
  old["eval_every"] = 150
  old["data"].update(val_split="val[:64]", test_split="test[:128]")
  (tmp_path / workdir_lib.CONFIG_FILE).write_text(json.dumps(old))
  assert workdir_lib.config_changes(str(tmp_path), config) == {}
  config.optim.base_lr *= 2
  assert list(workdir_lib.config_changes(str(tmp_path), config)) == ["optim.base_lr"]
