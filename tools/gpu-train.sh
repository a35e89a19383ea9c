#!/bin/bash
# Train several `confbot model train` variants side by side on one GPU machine.
#
#   DEADLINE_S=540 tools/gpu-train.sh CARRY 'NAME ARGS...' ['NAME ARGS...' ...]
#
# Run from the repository root on the GPU machine; Keras runs on JAX there. CARRY holds the
# packed data sets, the wheels and the teacher files, and each variant is a name and its
# `model train` arguments: docs/training-on-a-gpu.md says how to make CARRY, what to run and
# what comes back in $OUT. DEADLINE_S (seconds from this script's start; set it 30 s under the
# call's timeout) is when the results must be packed: each run's budget is fitted to it, a run
# still going PACK_S (default 45) before it is stopped, and the packing runs however the
# script ends.
set -u
export PYTHONUNBUFFERED=1 KERAS_BACKEND=jax
CARRY=$1; shift
T0=$(date +%s)
DEADLINE=$(( T0 + ${DEADLINE_S:-540} ))
PACK_S=${PACK_S:-45}
log() { echo "[$(( $(date +%s) - T0 ))s] $*"; }
names=()
pack() {
  [ -n "${OUT:-}" ] && [ ${#names[@]} -gt 0 ] || return 0
  # Whatever each run has written: its files are replaced whole (written, then renamed).
  tar cf /tmp/gpu-runs.tar runs/gpu-*.log $(ls runs/gpu-*/best.weights.h5 runs/gpu-*/history.csv \
    runs/gpu-*/run.json runs/gpu-*/config.json 2>/dev/null)
  split -b 15M -d /tmp/gpu-runs.tar "$OUT/gpu-runs.tar."
  ls -la "$OUT"
}
trap pack EXIT
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
  --target /tmp/site "$CARRY"/wheels/*.whl || { echo "wheel install failed"; exit 3; }
export PYTHONPATH=/tmp/site:$PWD
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
D=../shared/datasets/fer2013
[ -e ../shared ] || { mkdir -p /tmp/shared/datasets/fer2013 && ln -s /tmp/shared ../shared; }
[ -d $D ] || { echo "no $D and cannot make it"; exit 4; }
pids=()
for f in training publictest; do
  [ -e $D/$f.npz ] || { python3 tools/pack-faces.py unpack "$CARRY/$f.facepack" $D/$f.npz & pids+=($!); }
done
for pid in "${pids[@]}"; do wait "$pid" || { echo "unpacking the data failed"; exit 4; }; done
mkdir -p runs && cp "$CARRY"/*.npz runs/ 2>/dev/null
python3 -c "import jax, keras; print('jax', jax.__version__, 'keras', keras.__version__, jax.devices())" || exit 5
STOP_AT=$(( DEADLINE - PACK_S ))
# Each run's budget ends 20 s before it would be stopped: its last epoch and checkpoint fit.
BUDGET_MIN=$(python3 -c "print(round(max(0.5, ($STOP_AT - $(date +%s) - 20) / 60), 2))")
log "data ready; each run's budget $BUDGET_MIN min, stopped at ${STOP_AT}s if still going"
FRACTION=$(python3 -c "print(round(0.8 / $#, 3))")
for spec in "$@"; do
  set -f; eval "words=($spec)"; set +f   # no globbing: [48,96] stays a TOML list
  name=${words[0]}; names+=("$name")
  rm -rf "runs/gpu-$name"                # a rerun on a warm machine starts afresh
  XLA_PYTHON_CLIENT_MEM_FRACTION=$FRACTION \
    timeout $(( STOP_AT - $(date +%s) )) python3 -m confbot model train --out "runs/gpu-$name" \
    "${words[@]:1}" --set "budget_minutes=$BUDGET_MIN" --set fit_schedule_to_budget=true \
    > "runs/gpu-$name.log" 2>&1 &
done
last=0
while [ "$(jobs -r | wc -l)" -gt 0 ]; do
  sleep 5
  [ $(( $(date +%s) - last )) -ge 30 ] || continue
  last=$(date +%s)
  status=$(for n in "${names[@]}"; do grep '^epoch' "runs/gpu-$n.log" | tail -1 | cut -c1-80; done | tr '\n' '|')
  log "gpu $(nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader) | $status"
done
wait
log "all runs ended"
for n in "${names[@]}"; do
  echo "== $n"; grep -v '^Epoch\|step - \|^WARNING\|^I0000\|^W0000' "runs/gpu-$n.log" | tail -6
done
