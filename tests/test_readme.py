"""The README's commands, run as a user types them: the README is a tested contract.

Which commands run (the rule, stated in the README beside the examples): in a
```bash block of README.md, every command that follows a comment line saying
"on this machine" (up to the next comment line or the end of the block), and
every command of a bullet that says so ("..., on this machine:" before the
block). They are the `runlocal` chain — teacher → student → fine-tune → test,
conversion, a video folder built and trained on, the plan, two processes —
whose paths are the relative ones a user types. The other training commands name placeholders
(PATH_TO_TEACHER, the paper's datasets, clusters) and cannot run here: the last
test checks that their config files, arguments and keys exist and pass the
run's validation.

They run in README order through bash, from a scratch directory standing in for
the checkout (configs/, launch/ and amd_jax/ link to the repository's; everything the
commands write lands in it), with the test environment's python first on PATH
and `--config.total_steps=2` appended to every training command, under a data
root of their own (the embedded dataset linked into it, not rebuilt).

Then every ```python block of README.md runs as printed, in README order, each
as its own `python -c` in the same directory: a snippet may use what the chain
made (`runs/student`, `hf/ft`, ...) and must bring its own imports and inputs.
There is no exemption: a snippet that needs a dataset or a download belongs in
docs/, not in the README.
"""

import os
import re
import shlex
import subprocess
import sys

import pytest

from amd_jax.data import sources
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


def readme_python_blocks(text: str) -> list[str]:
  """The README's ```python blocks, in order."""
  return re.findall(r"^```python\n(.*?)^```", text, re.DOTALL | re.MULTILINE)


def run_python_blocks(text: str, cwd, env) -> dict[str, str]:
  """Runs every ```python block in `cwd`, asserting each ends well; returns block →
  what it printed."""
  printed = {}
  for block in readme_python_blocks(text):
    result = subprocess.run([sys.executable, "-c", block], cwd=cwd, env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, (block, result.stderr[-3000:])
    printed[block] = result.stdout
  return printed


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
                 "amd_jax.data.build video_folder --manual_dir runs/my_videos",
                 "configs/finetune.py:data=video_folder,runlocal",
                 "launch/local.sh -n 2"):
    assert needed in joined, (needed, commands)


def test_readme_commands_run_as_written(tmp_path):
  commands = readme_commands(open(os.path.join(ROOT, "README.md")).read())
  for name in ("configs", "launch", "amd_jax"):
    os.symlink(os.path.join(ROOT, name), tmp_path / name)
  env = environment()
  env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env["PATH"]
  # A data root of the run's own, so that the README's video folder (made in this
  # scratch directory) is built afresh; the embedded dataset is shared, not rebuilt.
  env["AMD_JAX_DATA"] = str(tmp_path / "data")
  os.mkdir(tmp_path / "data")
  sources.prepare("moving_digits")
  os.symlink(os.path.join(sources.data_root(), "moving_digits"), tmp_path / "data" /
             "moving_digits")
  printed = {}
  for command in commands:
    result = subprocess.run(["bash", "-c", as_run(command)], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, (command, result.stderr[-3000:])
    assert "Traceback" not in result.stderr, (command, result.stderr[-3000:])
    printed[command] = result.stdout
  assert os.path.isfile(tmp_path / "runs" / "ft" / "test_results.json")
  assert os.path.isdir(tmp_path / "ckpt" / "student") and os.path.isdir(tmp_path / "hf" / "ft")
  assert os.path.isfile(tmp_path / "runs" / "my_ft" / "test_results.json")
  # The pretrained.load and module snippets, at least, run here.
  snippets = run_python_blocks(open(os.path.join(ROOT, "README.md")).read(), tmp_path, env)
  loaded = [out for block, out in snippets.items() if 'pretrained.load("hf/ft")' in block]
  assert len(snippets) >= 2 and loaded and "(1, 8)" in loaded[0], snippets  # 8 classes' logits


def readme_training_commands(text: str) -> list[str]:
  """Every training command of the README's bash blocks, run here or not: `python -m
  amd_jax.main ...` and the launchers given CONFIG=... (continuation lines joined).
  A synopsis (optional parts in [brackets], e.g. `configs/FILE.py[:ARGS]`) is not a
  command."""
  blocks = re.findall(r"```bash\n(.*?)```", text, re.DOTALL)
  joined = [re.sub(r"\\\n\s*", " ", b) for b in blocks]
  lines = [" ".join(l.split()) for b in joined for l in b.splitlines()]
  return [l for l in lines if not l.startswith("#") and "[" not in l and
          ("amd_jax.main" in l or re.search(r"\bCONFIG=", l))]


def as_flags(command: str, existing: str, workdir: str) -> list[str]:
  """The command's amd_jax.main flags, its checkpoint paths (placeholders or runs of
  the paper's datasets) pointed at `existing` and its workdir at `workdir`."""
  words = shlex.split(command, comments=True)
  env = dict(w.split("=", 1) for w in words if re.fullmatch(r"[A-Z_]+=\S*", w))
  flags = [w for w in words if w.startswith("--config")]
  if "CONFIG" in env:
    flags.insert(0, f"--config={env['CONFIG']}")
  out = []
  for flag in flags:
    key, _, value = flag.partition("=")
    out.append(f"{key}={existing}" if key in ("--config.init", "--config.teacher.init")
               else flag)
  return out + [f"--workdir={workdir}"]


VALIDATE = """
import sys
from amd_jax import config_files, main, train
config_files.parse_flags(["amd_jax.main", *sys.argv[1:]])
config = main._CONFIG.value
train.validate(config, main._WORKDIR.value)
print("valid:", config.mode, config.model.variant, config.batch_size)
"""


def test_readme_training_commands_that_do_not_run_here_parse_and_validate(tmp_path):
  """The commands for the paper's datasets and clusters cannot run here; each still
  names a config file, argument and keys that exist and passes the run's own
  validation (as far as it goes before data), so a renamed key or argument fails."""
  text = open(os.path.join(ROOT, "README.md")).read()
  marked = {" ".join(c.split()) for c in readme_commands(text)}
  commands = [c for c in readme_training_commands(text) if c not in marked]
  assert len(commands) >= 5, commands       # Training and "Running at scale" examples
  existing = tmp_path / "checkpoint"
  existing.mkdir()
  for i, command in enumerate(commands):
    result = subprocess.run(
        [sys.executable, "-c", VALIDATE, *as_flags(command, str(existing),
                                                   str(tmp_path / f"run{i}"))],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and "valid:" in result.stdout, (command,
                                                                  result.stderr[-2000:])
