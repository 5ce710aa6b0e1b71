#!/usr/bin/env bash
# The studies behind docs/findings.md's "across search paths" and "ordered re-run" sections and
# docs/performance.md's ordered-vs-asynchronous wall time. Sequential (one study at a time on
# this 2-core machine); each step is skipped when its folder says it finished, so a rerun resumes.
# Usage: docs/findings/paths/run_all.sh STUDIES_DIR
set -u
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../../.." && pwd)
bin="$repo/.venv/bin/mistudy"
dir=${1:-studies/paths}
mkdir -p "$dir"
step() {  # name, then the mistudy arguments; a .done file marks a finished step
  local name=$1; shift
  [ -f "$dir/$name.done" ] && return 0
  echo "== $name: $* ($(date -u +%H:%M:%S))"
  local t0=$(date +%s)
  if "$bin" "$@"; then
    echo "$(( $(date +%s) - t0 ))" > "$dir/$name.done"
  else
    echo "== $name failed"
  fi
}
run() {  # name spec [extra run args]
  local name=$1 spec=$2; shift 2
  if [ -d "$dir/$name" ] && [ ! -f "$dir/$name.done" ]; then
    step "$name" run --resume --out "$dir/$name" --quiet "$@"
  else
    step "$name" run "$here/$spec" --out "$dir/$name" --quiet "$@"
  fi
}
run ordered-2cpu mnist-ordered.yaml --num-cpus 2
for s in 0 1 2; do run paths-s$s mnist-paths-s$s.yaml --num-cpus 2; done
for s in 0 1 2; do step confirm-paths-s$s confirm "$dir/paths-s$s" --top 5 --seeds 3 --quiet; done
run ordered-1cpu mnist-ordered.yaml --num-cpus 1
run async-2cpu mnist-async.yaml --num-cpus 2
step confirm-ordered-2cpu confirm "$dir/ordered-2cpu" --top 5 --seeds 3 --quiet
step confirm-ordered-1cpu confirm "$dir/ordered-1cpu" --top 5 --seeds 3 --quiet
echo "== all done ($(date -u +%H:%M:%S))"
