"""The README's commands, run as a user types them: the README is a tested contract.

Which commands run (the rule, stated in the README beside the examples): in a
```bash block of README.md, every command that follows a comment line saying
"on this machine" (up to the next comment line or the end of the block), and
every command of a bullet that says so ("..., on this machine:" before the
block). They are the `runlocal` chain — teacher → student → fine-tune → test,
conversion, `pretrained.load`, two processes — whose paths are the relative
ones a user types. The other commands name placeholders (DIR, PATH_TO_TEACHER,
the paper's datasets) and do not run here.

They run in README order through bash, from a scratch directory standing in for
the checkout (configs/ and launch/ link to the repository's; everything the
commands write lands in it), with the test environment's python first on PATH
and `--config.total_steps=2` appended to every training command.
"""

import os
import re
import shlex
import subprocess
import sys

import pytest

from runs import ROOT, environment

pytestmark = pytest.mark.slow

MARKER = re.compile(r"on this machine", re.IGNORECASE)
SHORT = "--config.total_steps=2"


def readme_commands(text: str) -> list[str]:
  """The marked commands of the README's bash blocks, continuation lines joined."""
  out = []
  lines = text.splitlines()
  i = 0
  while i < len(lines):
    if lines[i].strip() != "```bash":
      i += 1
      continue
    # A bullet or paragraph line just before the block may mark the whole block.
    marked = bool(MARKER.search(lines[i - 1])) if i else False
    i += 1
    command = ""
    while lines[i].strip() != "```":
      line = lines[i].strip()
      i += 1
      if line.startswith("#"):
        marked = bool(MARKER.search(line))
        continue
      command += line[:-1].rstrip() + " " if line.endswith("\\") else line
      if not line.endswith("\\"):
        if marked and command:
          out.append(command)
        command = ""
    i += 1
  return out


def as_run(command: str) -> str:
  """The command as the test runs it: a training run shortened to two steps."""
  words = shlex.split(command, comments=True)
  if "amd_jax.main" in words:
    words.append(SHORT)
  return shlex.join(words)


def test_readme_marks_the_whole_runlocal_chain():
  """Taking a step of the chain out of the README (or its marker) fails here."""
  commands = readme_commands(open(os.path.join(ROOT, "README.md")).read())
  joined = "\n".join(commands)
  for needed in ("configs/videomae.py:runlocal --workdir=runs/teacher",
                 "configs/pretrain.py:runlocal --workdir=runs/student "
                 "--config.teacher.init=runs/teacher",
                 "configs/finetune.py:runlocal --workdir=runs/ft --config.init=runs/student",
                 "--workdir=runs/ft --config.mode=test",
                 "amd_jax.convert --src runs/student",
                 "pretrained.load(",
                 "launch/local.sh -n 2"):
    assert needed in joined, (needed, commands)


def test_readme_commands_run_as_written(tmp_path, compile_cache):
  commands = readme_commands(open(os.path.join(ROOT, "README.md")).read())
  for name in ("configs", "launch"):
    os.symlink(os.path.join(ROOT, name), tmp_path / name)
  env = environment(compile_cache)
  env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env["PATH"]
  printed = {}
  for command in commands:
    result = subprocess.run(["bash", "-c", as_run(command)], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, (command, result.stderr[-3000:])
    assert "Traceback" not in result.stderr, (command, result.stderr[-3000:])
    printed[command] = result.stdout
  assert os.path.isfile(tmp_path / "runs" / "ft" / "test_results.json")
  assert os.path.isdir(tmp_path / "ckpt" / "student") and os.path.isdir(tmp_path / "hf" / "ft")
  loaded = [out for c, out in printed.items() if "pretrained.load(" in c]
  assert loaded and "(1, 8)" in loaded[0], printed    # the classifier's logits, 8 classes
