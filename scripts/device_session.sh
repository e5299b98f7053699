#!/usr/bin/env bash
# One lent-GPU session, all of it for the recogniser on real speech (docs/recipes.md, "Real
# speech"): scripts/train_gpu.sh continuing checkpoints/asr.pt on every line of the training text
# and 12,000 short utterances (a word alone, a number, a digit string), spoken by 24 voices, with
# waveform augmentation made by 12 loader processes (trimmed onsets, pitch, rooms, noise and
# babble, telephone codecs, gain) and a snapshot every 250 steps, then the average
# of the shipped model and the last four snapshots (asr-averaged.pt) and of the snapshots alone
# (asr-snapshots.pt) beside the run's best.
# The TTS runs and the language model are one RUNS word away (RUNS="asr ar lm" AR_RUNS=...).
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

voices=slt,awb,rms,kal16,en-us,en-gb+f2,en-us+m3,en-gb-x-rp+f3,en-gb-scotland+m1,en-us+f4
voices+=,en-us+m7,en-gb+klatt4,en-us-nyc+f5,en-gb-x-gbcwmd+m2,en-us+Andy,en-gb+Annie,en-us+aunty
voices+=,en-gb+david,en-us+edward,en-gb+grandpa,en-us+linda,en-us+Michael,en-us+steph,en-us+zac
# the light settings of docs/recipes.md, "Real speech" (heavier ones read people no better)
wave="--trim-augment 0.5 --wave-speed 0.05 --pitch-augment 2 --reverb-augment 0.15"
wave+=" --wave-noise 0.2 --telephone-augment 0.15 --gain-augment 6 --vtlp-augment 0.1"
env RUNS="${RUNS:-asr}" ASR_INIT=checkpoints/asr.pt ASR_LR="${ASR_LR:-6e-4}" ASR_WARMUP=300 \
    ASR_MARGIN="${ASR_MARGIN:-150}" SLT_LINES="${SLT_LINES:-200}" \
    SPREAD_LINES="${SPREAD_LINES:-41500}" ASR_SHORT_LINES="${ASR_SHORT_LINES:-12000}" \
    ASR_NOISE_SNR="" ASR_SILENCE=0 ASR_ARGS="${ASR_ARGS:-$wave --loader-workers 12}" \
    VOICES="$voices" \
    scripts/train_gpu.sh "$O/models" "${BUDGET:-480}" > "$O/train.log" 2>&1
echo "train rc $?"
pkill -P "$rescuer" sleep; kill "$rescuer" 2>/dev/null
tail -30 "$O/train.log"
ls -la "$O" "$O/models"
