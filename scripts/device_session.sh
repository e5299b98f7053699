#!/usr/bin/env bash
# One lent-GPU session, all of it for the recogniser (the one open model target, held-out WER):
# scripts/train_gpu.sh continuing checkpoints/asr.pt on every line of the training text spoken by
# 14 voices, with the random equaliser (--channel-augment) and a snapshot every 250 steps, then
# the average of the shipped model and the last four snapshots (asr-averaged.pt) and of the
# snapshots alone (asr-snapshots.pt) beside the run's best.
# The TTS runs and the language model of the session before are one RUNS word away
# (RUNS="asr ar lm" AR_RUNS=...; its script is in git history, commit 6b46668).
# Run from the repository root with .gpu/ and data/text/train.txt carried (docs/recipes.md:
# flite, espeak-ng and wheels for a machine without apt); the exports and logs go to $OUT.
set -u
G=$PWD/.gpu
export PATH=$G/root/usr/bin:$PATH ESPEAK_DATA_PATH=$G/root/usr/lib/x86_64-linux-gnu
export LD_LIBRARY_PATH=$G/root/usr/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-}
PY=${PY:-python3}
$PY --version; nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null; nproc
# training needs no service packages: only the pipeline's own
$PY -m pip install -q --no-index --no-deps --find-links "$G/whl" --target /tmp/site click \
    soundfile cffi pycparser soxr jiwer rapidfuzz num2words 2>&1 | grep -v WARN | tail -3
export PYTHONPATH=/tmp/site:$PWD PYTHON=$PY
O=${OUT:-/tmp/out}
mkdir -p "$O"
# should the budget be overrun and the command killed, the best checkpoints still come back
rescue() { sleep "${RESCUE_AFTER:-560}"; tar cf "$O/rescue.tar" runs/*/best.pt runs/*.log; }
rescue >/dev/null 2>&1 &
rescuer=$!

env RUNS="${RUNS:-asr}" ASR_INIT=checkpoints/asr.pt ASR_LR="${ASR_LR:-6e-4}" ASR_WARMUP=300 \
    ASR_MARGIN="${ASR_MARGIN:-150}" SLT_LINES="${SLT_LINES:-200}" \
    SPREAD_LINES="${SPREAD_LINES:-41500}" \
    VOICES="slt,awb,rms,kal16,en-us,en-gb+f2,en-us+m3,en-gb-x-rp+f3,en-gb-scotland+m1,en-us+f4,en-us+m7,en-gb+klatt4,en-us-nyc+f5,en-gb-x-gbcwmd+m2" \
    scripts/train_gpu.sh "$O/models" "${BUDGET:-480}" > "$O/train.log" 2>&1
echo "train rc $?"
pkill -P "$rescuer" sleep; kill "$rescuer" 2>/dev/null
tail -30 "$O/train.log"
ls -la "$O" "$O/models"
