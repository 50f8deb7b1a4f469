#!/usr/bin/env bash
# Table 1 shaped results on a PAIP-like phantom cohort (docs/results.md has the figures):
# k train/test subsets as in the paper, a subtype model per subset (N 1500, T 96, two CPU
# cores), model selection on each subset's test slides, scores of the chosen epoch, and an
# ensemble of the k chosen models voting on an independent phantom cohort none of them saw.
#
#   bash docs/experiments/paip_subsets.sh [OUT]        # about 20 minutes on 2 cores
#   K=3 EPOCHS=8 COUNT=12 bash docs/experiments/paip_subsets.sh table1
set -euo pipefail
OUT=${1:-table1}
K=${K:-3}
EPOCHS=${EPOCHS:-8}
COUNT=${COUNT:-12}
SS=${SLIDESIFT:-slidesift}
GEOM=(-N 1500 -T 96)

"$SS" phantom --out "$OUT/cohort" --count "$COUNT" --seed 0
"$SS" phantom --out "$OUT/unseen" --count 6 --seed 99
"$SS" subsets "$OUT/cohort/manifest.csv" --out "$OUT/subsets" -k "$K"
best=()
for j in $(seq 1 "$K"); do
  m="$OUT/subsets/subset_$j.csv"
  "$SS" train "$m" --out "$OUT/run$j" "${GEOM[@]}" --epochs "$EPOCHS" --classes subtype \
    --cache "$OUT/cache"
  "$SS" select "$OUT/run$j" "$m" --round-stride
  b=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['best'])" \
      "$OUT/run$j/selection.json")
  best+=("$b")
  "$SS" evaluate "$b" "$m" --split test --out "$OUT/seg$j" --round-stride
done
ens=()
for b in "${best[@]:1}"; do ens+=(--ensemble "$b"); done
"$SS" segment "${best[0]}" "$OUT/unseen/manifest.csv" --out "$OUT/ensemble" --round-stride \
  "${ens[@]}"
