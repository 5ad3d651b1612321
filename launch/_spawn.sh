# Shared by launch/local.sh and launch/multinode.sh; source it, then call
#
#   spawn_and_wait FIRST_ID LOCAL_COUNT TOTAL COORDINATOR GPU_MODE -- COMMAND...
#
# Starts LOCAL_COUNT processes of COMMAND with process ids FIRST_ID.. of TOTAL,
# joined through COORDINATOR (host:port; amd_jax/distributed.py reads the
# AMD_JAX_* variables). GPU_MODE=1 gives process i the local GPU i alone. Every
# line a process prints starts with its process id in brackets: "[3] ...".
# Forwards SIGTERM/SIGINT to all of them (they save and exit 0), and if one
# fails, stops the others and returns its exit code.

spawn_and_wait() {
  local first="$1" count="$2" total="$3" coordinator="$4" gpu_mode="$5"
  shift 5
  [[ "${1:-}" == "--" ]] && shift
  (($# > 0)) || { echo "error: no command to run" >&2; return 2; }

  local pids=() i id
  for ((i = 0; i < count; i++)); do
    id=$((first + i))
    # Each line of process ID's output starts with "[ID] ". exec: the pid waited
    # for and signalled is the process itself, not a shell around it.
    (
      if ((gpu_mode)); then export CUDA_VISIBLE_DEVICES="$i"; fi
      export AMD_JAX_COORDINATOR="$coordinator" AMD_JAX_NUM_PROCESSES="$total" \
        AMD_JAX_PROCESS_ID="$id"
      exec "$@" > >(_prefix_lines "$id") 2> >(_prefix_lines "$id" >&2)
    ) &
    pids+=("$!")
  done
  trap 'kill -TERM "${pids[@]}" 2>/dev/null || true' TERM INT

  # Poll rather than `wait -n`: a forwarded signal must not end the waiting, and
  # bash keeps each finished child's status for `wait PID`.
  local remaining=("${pids[@]}") rc=0 status pid still
  while ((${#remaining[@]})); do
    still=()
    for pid in "${remaining[@]}"; do
      if kill -0 "$pid" 2>/dev/null; then
        still+=("$pid")
        continue
      fi
      status=0
      wait "$pid" || status=$?
      if ((status != 0 && rc == 0)); then
        rc=$status
        echo "error: a process exited with $status; stopping the others" >&2
        kill -TERM "${pids[@]}" 2>/dev/null || true
      fi
    done
    remaining=(${still[@]+"${still[@]}"})
    ((${#remaining[@]} == 0)) || sleep 0.2
  done
  trap - TERM INT
  return "$rc"
}

_prefix_lines() {  # ID: stdin to stdout, "[ID] " before every line, unbuffered
  awk -v prefix="[$1] " '{ print prefix $0; fflush() }'
}

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
