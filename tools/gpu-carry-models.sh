#!/bin/bash
# Leave the model binaries out of a device call's 64 MiB, and put them back afterwards.
#
#   tools/gpu-carry-models.sh out    # before the call: untrack and ignore them (files stay)
#   tools/gpu-carry-models.sh back   # after it: track them again, drop the ignore lines
#
# The device call copies tracked and unignored files; these 10 MB are not needed there
# (docs/training-on-a-gpu.md). `back` is safe to run twice, and `out` refuses to run twice.
set -eu
cd "$(git rev-parse --show-toplevel)"
EXCLUDE=.git/info/exclude
MARK="# gpu-carry-models.sh"
FILES=(models/emotion_cnn.weights.h5 models/emotion_cnn_lite.weights.h5 models/emotion_cnn_micro.weights.h5
       models/emotion_cnn.tflite models/emotion_cnn_lite.tflite models/emotion_cnn_micro.tflite)
case "${1:-}" in
  out)
    if grep -qF "$MARK" "$EXCLUDE" 2>/dev/null; then
      echo "already out; run '$0 back' first" >&2; exit 1
    fi
    git rm --cached -q -- "${FILES[@]}"
    { echo "$MARK begin"; printf '/%s\n' "${FILES[@]}"; echo "$MARK end"; } >> "$EXCLUDE"
    echo "untracked ${#FILES[@]} model files for the call; run '$0 back' after it";;
  back)
    git reset -q -- models/
    [ ! -f "$EXCLUDE" ] || sed -i "/^$MARK begin\$/,/^$MARK end\$/d" "$EXCLUDE"
    git status --short -- models/;;
  *) echo "usage: $0 out|back" >&2; exit 2;;
esac
