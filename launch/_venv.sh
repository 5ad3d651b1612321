# Shared by launch/demo.sh and launch/test.sh; source it from the repository root.
#
#   ensure_venv EXTRAS   # EXTRAS: "" (core), "dev,convert", ...
#
# Creates .venv with `$PYTHON -m venv` (default python3, must be >= 3.11) when it
# is missing, runs `pip install -e '.[EXTRAS]'` only when setup.cfg,
# pyproject.toml, the repository path or the Python version changed since the last
# install of those extras (stamp: .venv/.amd_jax-installed), then activates it.

_venv_die() { echo "error: $*" >&2; return 1; }

_venv_check_python() {  # $1: interpreter; fails unless it is Python >= 3.11
  "$1" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null
}

ensure_venv() {
  local extras="${1:-}"
  local py="${PYTHON:-python3}"
  local venv=".venv"
  local stamp="$venv/.amd_jax-installed"

  if [[ ! -x "$venv/bin/python" ]]; then
    command -v "$py" >/dev/null 2>&1 ||
      { _venv_die "'$py' not found: install Python >= 3.11 (or set PYTHON=/path/to/python3.11)"; return 1; }
    _venv_check_python "$py" ||
      { _venv_die "Python >= 3.11 required, '$py' is $("$py" -V 2>&1); set PYTHON=/path/to/python3.11"; return 1; }
    echo "Creating $PWD/$venv with $("$py" -V 2>&1)" >&2
    "$py" -m venv "$venv" || { _venv_die "'$py -m venv $venv' failed (on Debian/Ubuntu: apt install python3-venv)"; return 1; }
  elif ! _venv_check_python "$venv/bin/python"; then
    _venv_die "$PWD/$venv has $("$venv/bin/python" -V 2>&1), need >= 3.11: remove $venv and rerun"; return 1
  fi

  local key
  key="$( { cat setup.cfg pyproject.toml; echo "$PWD"; "$venv/bin/python" -VV; } | sha256sum | cut -c1-16)"
  # A stamp line is "KEY EXTRAS"; any install for this key satisfies the core package.
  local have=0
  if [[ -z "$extras" ]]; then
    if grep -qs "^$key " "$stamp"; then have=1; fi
  else
    if grep -qsxF "$key $extras" "$stamp"; then have=1; fi
  fi
  if ((have == 0)); then
    local spec="."
    [[ -n "$extras" ]] && spec=".[$extras]"
    echo "Installing $spec into $PWD/$venv (only when setup.cfg/pyproject.toml change)..." >&2
    # pip's messages are shown after it ends, less its "Location ... is ignored"
    # noise about index folders that a machine's pip.conf names but lacks.
    local log="$venv/.pip-install.log" pip_rc=0
    "$venv/bin/python" -m pip install -q -e "$spec" 2>"$log" || pip_rc=$?
    grep -v "is ignored: it is neither a file nor a directory" "$log" >&2 || true
    ((pip_rc == 0)) || { _venv_die "pip install -e '$spec' failed (exit $pip_rc, see above)"; return 1; }
    grep -s "^$key " "$stamp" > "$stamp.tmp" || true  # drop lines of older keys
    echo "$key $extras" >> "$stamp.tmp"
    mv "$stamp.tmp" "$stamp"
  fi

  export VIRTUAL_ENV="$PWD/$venv"
  export PATH="$VIRTUAL_ENV/bin:$PATH"
  unset PYTHONHOME
}
