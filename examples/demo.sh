#!/usr/bin/env bash
# The main job on bundled data, offline: generate images, embed them, show the store.
# Later stages (candidates, filter, cluster, eval) join this script as they land.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.venv/bin}
export HF_HUB_OFFLINE=1
DEMO=${DEMO_DIR:-demo}
STORE="$DEMO/mdclust.h5"
mkdir -p "$DEMO"
"$BIN/python" examples/make_demo_images.py "$DEMO/images" 90
# Random ViT-B-32 weights: the real ones cannot be downloaded here; the features exercise the
# whole pipeline but carry no meaning until the bundled tiny CLIP lands.
"$BIN/mdclust" embed "$DEMO/images" --store "$STORE" --model ViT-B-32 --pretrained random \
  --labels "$DEMO/images/labels.csv"
echo "--- rerun on the unchanged folder (nothing to embed):"
"$BIN/mdclust" embed "$DEMO/images" --store "$STORE" --model ViT-B-32 --pretrained random
"$BIN/mdclust" info --store "$STORE"
