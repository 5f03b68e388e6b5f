#!/bin/bash
# CLIPood base-to-new generalization (paper Table 3) through CoOp's train.py, unedited: for each dataset and
# seed, train on the base classes (16 shots), evaluate the saved BMA model on the new classes, then print
# Base / New / H per dataset and on average.
#
#   COOP_ROOT=/path/to/CoOp bash configs/dassl/base2new.sh DATA OUTROOT [dataset ...]
#
# DATA holds the datasets as CoOp's DATASETS.md lays them out; datasets are CoOp's config names
# (default: the 11 of Table 3). Environment: SEEDS (default "1 2 3"), CFG (trainer config; default
# vit_b16_base2new.yaml next to this script), PYTHON (default python), EXTRA_OPTS (more KEY VALUE config
# overrides for both commands). Finished steps are skipped; an interrupted training run resumes from its
# last epoch checkpoint.
set -euo pipefail

if [ $# -lt 2 ] || [ -z "${COOP_ROOT:-}" ]; then
    echo "usage: COOP_ROOT=/path/to/CoOp bash $0 DATA OUTROOT [dataset ...]" >&2
    exit 2
fi
DATA=$(realpath "$1")
OUT=$(realpath -m "$2")
shift 2
DATASETS=${*:-imagenet caltech101 oxford_pets stanford_cars oxford_flowers food101 fgvc_aircraft sun397 dtd eurosat ucf101}
SEEDS=${SEEDS:-1 2 3}
CFG=$(realpath "${CFG:-$(dirname "$0")/trainers/CLIPood/vit_b16_base2new.yaml}")
PYTHON=${PYTHON:-python}
read -r -a EXTRA <<< "${EXTRA_OPTS:-}"

finished() {  # $1: output dir, $2: the line its log ends the job with
    grep -qx -- "$2" "$1"/log.txt* 2>/dev/null
}

cd "$COOP_ROOT"
for DATASET in $DATASETS; do
    for SEED in $SEEDS; do
        TRAIN_DIR=$OUT/train_base/$DATASET/seed$SEED
        TEST_DIR=$OUT/test_new/$DATASET/seed$SEED
        COMMON=(--root "$DATA" --seed "$SEED" --trainer CLIPood
                --dataset-config-file "configs/datasets/$DATASET.yaml" --config-file "$CFG")
        if ! finished "$TRAIN_DIR" "Finish training"; then
            "$PYTHON" train.py "${COMMON[@]}" --output-dir "$TRAIN_DIR" \
                DATASET.NUM_SHOTS 16 DATASET.SUBSAMPLE_CLASSES base "${EXTRA[@]}"
        fi
        if ! finished "$TEST_DIR" "=> result"; then
            "$PYTHON" train.py "${COMMON[@]}" --output-dir "$TEST_DIR" --model-dir "$TRAIN_DIR" --eval-only \
                DATASET.NUM_SHOTS 16 DATASET.SUBSAMPLE_CLASSES new "${EXTRA[@]}"
        fi
    done
done
"$PYTHON" -m dassl_trainers.base2new_summary "$OUT"
