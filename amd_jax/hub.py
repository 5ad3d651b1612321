"""Checkpoints named by a Hugging Face Hub repo id (`MCG-NJU/videomae-base`), read
through huggingface_hub's own cache.

The rule, for every checkpoint a command reads (`--config.init`,
`--config.teacher.init`, `pretrained.load`, `python -m amd_jax.convert --src`):

  * an existing local path is that path, whatever its spelling;
  * otherwise `owner/name` or `owner/name@revision` (a branch, tag or commit) is a
    Hub model repo, fetched with `huggingface_hub.snapshot_download` into its cache
    (HF_HOME / HF_HUB_CACHE; nothing is fetched with HF_HUB_OFFLINE=1);
  * a URL (`hf://…`, `https://…`, any `scheme://`) is never a checkpoint, as it is
    never an output path (amd_jax.paths.is_url).

A repo must hold a Hugging Face VideoMAE folder (config.json with safetensors or
pytorch_model.bin); only those files are fetched, safetensors when the repo has them.
huggingface_hub is optional (the `convert` extra brings it): without it, an id
is refused in one line. Light: huggingface_hub is imported only for an id.
"""

from __future__ import annotations

import glob
import logging
import os
import re

from amd_jax import errors, paths

log = logging.getLogger("amd_jax")

# owner/name[@revision]: the Hub's repo names start with a letter or digit, then
# letters, digits, '_', '-' or '.'; a revision may hold '/' (refs/pr/1).
_REPO_ID = re.compile(r"(?P<repo>[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*)(?:@(?P<revision>\S+))?")
# What convert.readers reads of a Hugging Face folder, safetensors first.
_SAFETENSORS = ["config.json", "model.safetensors", "model.safetensors.index.json",
                "model-*.safetensors"]
_PYTORCH = ["config.json", "pytorch_model.bin"]
_FIX = "download it once online, or pass a local folder"


def is_repo_id(src: str) -> bool:
  """Whether `src` names a Hub repo: owner/name[@revision] with no local path of that name."""
  return not os.path.exists(src) and _REPO_ID.fullmatch(src) is not None


def local(src: str, what: str = "checkpoint") -> str:
  """The local path of the checkpoint `src`: itself when it exists, else the cached
  snapshot folder of the Hub repo it names (fetched first when not cached and
  online). Anything else is refused in one line that starts with `what` and `src`."""
  if os.path.exists(src):
    return src
  if paths.is_url(src):
    raise errors.BadInput(f"{what} {src} is a URL: give a local path, or a Hugging Face "
                          "repo id as owner/name[@revision] (e.g. MCG-NJU/videomae-base)")
  match = _REPO_ID.fullmatch(src)
  if match is None:
    raise errors.BadInput(f"{what} {src} does not exist")
  return _snapshot(src, match["repo"], match["revision"], what)


def _snapshot(src: str, repo: str, revision: str | None, what: str) -> str:
  try:
    import huggingface_hub
    from huggingface_hub import constants
    from huggingface_hub import errors as hub_errors
  except ImportError:
    raise errors.BadInput(f"{what} {src} is not a local path, and reading it as a Hugging "
                          "Face repo id needs huggingface_hub: pip install -e '.[convert]', "
                          "or pass a local folder") from None
  cache = constants.HF_HUB_CACHE
  at = f"{what} {src} is not a local path, and the Hugging Face repo"
  try:
    folder = huggingface_hub.snapshot_download(repo, revision=revision,
                                               allow_patterns=_SAFETENSORS)
    if not glob.glob(os.path.join(folder, "*.safetensors")):
      folder = huggingface_hub.snapshot_download(repo, revision=revision,
                                                 allow_patterns=_PYTORCH)
  except hub_errors.LocalEntryNotFoundError as e:
    # Not cached (or cached in part), and the Hub was not asked or did not answer.
    why = ("with HF_HUB_OFFLINE=1" if huggingface_hub.is_offline_mode() else
           f"while the Hub cannot be reached ({_first_line(e.__cause__ or e)})")
    part = "in full " if isinstance(e, hub_errors.IncompleteSnapshotError) else ""
    raise errors.BadInput(f"{what} {src} is not a local path, and not {part}in the Hugging "
                          f"Face cache ({cache}) {why}: {_FIX}") from None
  except hub_errors.RevisionNotFoundError:
    raise errors.BadInput(f"{at} {repo} has no revision {revision}") from None
  except hub_errors.RepositoryNotFoundError:   # also a gated or private one without access
    raise errors.BadInput(f"{what} {src} is neither a local path nor a Hugging Face repo you "
                          "can access (for a gated or private one: hf auth login)") from None
  except hub_errors.HFValidationError as e:
    raise errors.BadInput(f"{what} {src} is neither a local path nor a valid Hugging Face "
                          f"repo id ({_first_line(e)})") from None
  except (hub_errors.HfHubHTTPError, OSError) as e:
    raise errors.BadInput(f"{at} cannot be read: {_first_line(e)}") from None
  if not os.path.isfile(os.path.join(folder, "config.json")):
    raise errors.BadInput(f"{at} {repo} holds no config.json: a repo id must name a Hugging "
                          "Face VideoMAE model; pass any other checkpoint as a local path")
  log.info("%s: Hugging Face repo %s at commit %s (%s)", src, repo, os.path.basename(folder),
           folder)
  return folder


def _first_line(e: BaseException) -> str:
  text = str(e).strip()
  return f"{type(e).__name__}: {text.splitlines()[0] if text else ''}".rstrip(": ")
