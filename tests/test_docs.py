"""Documentation that ships with the code: no reference leads outside the repository,
and every reference into docs/ lands on a file and a heading that exist.

Code comments, messages and docs point to `docs/<name>.md#<anchor>` (GitHub's
heading anchors) or to `docs/<name>.md, "<heading>"`; both are checked here, as are
the relative links of every Markdown file.
"""

import functools
import os
import re
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Documents that never shipped with the repository, and numbered sections of them.
# Written so that this file does not match itself.
OUTSIDE = re.compile(r"spec[/]|(?:DESIGN|STYLE|PERF|ENV|AMD)[.]md|[.][.]/shared|\u00a7")
# `docs/<name>.md`, optionally with `#<anchor>` or followed by `, "<heading>"`.
DOCS_REF = re.compile(r"\bdocs/([\w./-]+?\.md)(?:#([\w-]+)|,\s*(?:section\s+)?[\"']([^\"']+)[\"'])?")
# Docs of the official AMD / VideoMAE repositories, named as such in the text.
UPSTREAM_DOCS = {"DATASET.md", "MODEL_ZOO.md", "PRETRAIN.md", "INSTALL.md"}
MD_LINK = re.compile(r"\]\(([^)\s]+)\)")


@functools.lru_cache(maxsize=None)
def tracked_text_files() -> dict:
  """path (relative to the repository) → text, for every tracked text file."""
  # The suite runs in a checkout (CI clones the repository): git lists what ships.
  out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True)
  files = {}
  for path in out.stdout.decode().split("\0"):
    full = os.path.join(ROOT, path)
    if not path or not os.path.isfile(full):
      continue
    with open(full, "rb") as f:
      data = f.read()
    if b"\0" in data:
      continue
    try:
      files[path] = data.decode("utf-8")
    except UnicodeDecodeError:
      continue
  return files


def anchor(heading: str) -> str:
  """GitHub's anchor of a heading: link syntax and punctuation dropped, lowercase,
  spaces → hyphens."""
  text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip())
  return re.sub(r"[^\w\- ]", "", text.lower()).replace(" ", "-")


@functools.lru_cache(maxsize=None)
def headings(path: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
  """(heading texts, their anchors) of a Markdown file, outside code blocks;
  repeated anchors get GitHub's -1, -2 … suffixes."""
  texts, anchors, seen, fenced = [], [], {}, False
  with open(os.path.join(ROOT, path), encoding="utf-8") as f:
    for line in f:
      if line.lstrip().startswith("```"):
        fenced = not fenced
      m = None if fenced else re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)
      if m:
        base = anchor(m.group(1))
        n = seen.get(base, 0)
        seen[base] = n + 1
        texts.append(m.group(1))
        anchors.append(base if n == 0 else f"{base}-{n}")
  return tuple(texts), tuple(anchors)


def _line(text: str, pos: int) -> int:
  return text.count("\n", 0, pos) + 1


def _check_target(path: str, anchor_: str | None, title: str | None) -> str | None:
  """Why a reference to docs file `path` (relative to the root) does not resolve."""
  if not os.path.isfile(os.path.join(ROOT, path)):
    return f"{path} does not exist"
  texts, anchors = headings(path)
  if anchor_ and anchor_ not in anchors:
    return f"{path} has no heading with anchor #{anchor_}"
  if title and not any(t.startswith(title) for t in texts):
    return f"{path} has no heading starting {title!r}"
  return None


def test_no_reference_leads_outside_the_repository():
  found = [f"{path}:{n}: {line.strip()}"
           for path, text in tracked_text_files().items()
           for n, line in enumerate(text.splitlines(), 1) if OUTSIDE.search(line)]
  assert not found, ("references to documents that do not ship with the repository "
                     "(point to docs/ instead):\n" + "\n".join(found))


def test_every_docs_reference_exists():
  bad = []
  for path, text in tracked_text_files().items():
    for m in DOCS_REF.finditer(text):
      name = m.group(1)
      if name in UPSTREAM_DOCS and not os.path.exists(os.path.join(ROOT, "docs", name)):
        continue
      why = _check_target(f"docs/{name}", m.group(2), m.group(3))
      if why:
        bad.append(f"{path}:{_line(text, m.start())}: {m.group(0)!r}: {why}")
  assert not bad, "broken references into docs/:\n" + "\n".join(bad)


def test_markdown_links_resolve():
  bad = []
  for path, text in tracked_text_files().items():
    if not path.endswith(".md"):
      continue
    for m in MD_LINK.finditer(text):
      target = m.group(1)
      if re.match(r"[a-z]+:", target):        # http:, https:, mailto:
        continue
      file, _, frag = target.partition("#")
      resolved = (os.path.normpath(os.path.join(os.path.dirname(path), file)) if file
                  else path)
      if not os.path.exists(os.path.join(ROOT, resolved)):
        why = f"{resolved} does not exist"
      elif frag and resolved.endswith(".md"):
        why = _check_target(resolved, frag, None)
      else:
        why = None
      if why:
        bad.append(f"{path}:{_line(text, m.start())}: ({target}): {why}")
  assert not bad, "broken Markdown links:\n" + "\n".join(bad)


@pytest.mark.parametrize("heading, expected", [
    ("Token order", "token-order"),
    ("GPU check (launch/gpu_check.sh)", "gpu-check-launchgpu_checksh"),
    ("Pre-training recipe", "pre-training-recipe"),
    ("[Links](x.md) and `code`", "links-and-code"),
])
def test_anchor_follows_github(heading, expected):
  assert anchor(heading) == expected
