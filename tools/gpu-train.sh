#!/bin/bash
# Train several `confbot model train` variants side by side on one GPU machine.
#
#   tools/gpu-train.sh CARRY 'NAME ARGS...' ['NAME ARGS...' ...]
#
# Run from the repository root on the GPU machine; Keras runs on JAX there. CARRY holds the
# packed data sets, the wheels and the teacher files, and each variant is a name and its
# `model train` arguments: docs/training-on-a-gpu.md says how to make CARRY, what to run and
# what comes back in $OUT. HARD_S (default 450) stops a run that outlives its budget.
set -u
export PYTHONUNBUFFERED=1 KERAS_BACKEND=jax
CARRY=$1; shift
T0=$(date +%s)
log() { echo "[$(( $(date +%s) - T0 ))s] $*"; }
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
  --target /tmp/site "$CARRY"/wheels/*.whl || { echo "wheel install failed"; exit 3; }
export PYTHONPATH=/tmp/site:$PWD
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
D=../shared/datasets/fer2013
[ -e ../shared ] || { mkdir -p /tmp/shared/datasets/fer2013 && ln -s /tmp/shared ../shared; }
[ -d $D ] || { echo "no $D and cannot make it"; exit 4; }
for f in training publictest; do
  [ -e $D/$f.npz ] || python3 tools/pack-faces.py unpack "$CARRY/$f.facepack" $D/$f.npz &
done
wait
mkdir -p runs && cp "$CARRY"/*.npz runs/ 2>/dev/null
python3 -c "import jax, keras; print('jax', jax.__version__, 'keras', keras.__version__, jax.devices())" || exit 5
log "data ready"
names=()
for spec in "$@"; do
  eval "words=($spec)"
  name=${words[0]}; names+=("$name")
  XLA_PYTHON_CLIENT_MEM_FRACTION=$(python3 -c "print(round(0.8 / $#, 3))") \
    timeout "${HARD_S:-450}" python3 -m confbot model train --out "runs/gpu-$name" "${words[@]:1}" \
    > "runs/gpu-$name.log" 2>&1 &
done
sleep 20
while [ "$(jobs -r | wc -l)" -gt 0 ]; do
  status=$(for n in "${names[@]}"; do grep '^epoch' "runs/gpu-$n.log" | tail -1 | cut -c1-80; done | tr '\n' '|')
  log "gpu $(nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader) | $status"
  sleep 30
done
wait
log "all runs ended"
for n in "${names[@]}"; do
  echo "== $n"; grep -v '^Epoch\|step - \|^WARNING\|^I0000\|^W0000' "runs/gpu-$n.log" | tail -6
done
if [ -n "${OUT:-}" ]; then
  tar cf /tmp/gpu-runs.tar runs/gpu-*.log $(ls runs/gpu-*/best.weights.h5 runs/gpu-*/history.csv \
    runs/gpu-*/run.json runs/gpu-*/config.json 2>/dev/null)
  split -b 15M -d /tmp/gpu-runs.tar "$OUT/gpu-runs.tar."
  ls -la "$OUT"
fi
