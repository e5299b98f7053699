#!/usr/bin/env bash
# One lent-GPU session (2026-11-27, late): the service's GPU path measured, then the shipped
# models trained further. Run from the repository root with .gpu/ and data/text/train.txt
# carried (docs/recipes.md: flite, espeak-ng, redis-server and wheels for a machine without apt).
#   1. the queue benchmark with the worker on the GPU (nothing else on the GPU), while the
#      corpus is spoken on the other cores;
#   2. scripts/train_gpu.sh: ASR fine-tuned from checkpoints/asr.pt, and the monotonic-attention
#      AR model warm-started from the shipped dot model (then checkpoints/tts-ar.pt, now
#      checkpoints/tts-ar-dot.pt), side by side;
#   3. the precision benchmark (fp32 against bf16) on the idle GPU.
set -u
G=$PWD/.gpu
export PATH=$G/root/usr/bin:$PATH ESPEAK_DATA_PATH=$G/root/usr/lib/x86_64-linux-gnu
export LD_LIBRARY_PATH=$G/root/usr/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-}
PY=${PY:-python3}
$PY --version; nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null; nproc
$PY -m pip install -q --no-index --no-deps --find-links "$G/whl" --target /tmp/site click packaging \
    celery kombu billiard vine amqp click-didyoumean click-repl click-plugins prompt-toolkit wcwidth \
    python-dateutil six tzdata tzlocal redis prometheus-client pytest pytest-timeout pluggy iniconfig \
    pygments soundfile cffi pycparser soxr jiwer rapidfuzz num2words msgpack 2>&1 | grep -v WARN | tail -3
export PYTHONPATH=/tmp/site:$PWD PYTHON=$PY
# Debian's redis-server wants a few libraries the image may lack; only Redis sees them
redis-server() { LD_LIBRARY_PATH=$G/redislib:$LD_LIBRARY_PATH command redis-server "$@"; }
redis-cli() { LD_LIBRARY_PATH=$G/redislib:$LD_LIBRARY_PATH command redis-cli "$@"; }
export -f redis-server redis-cli
export G
O=${OUT:-/tmp/out}
mkdir -p "$O"
n=$(nproc)
# four cores for the benchmark's worker, the rest speak the corpus (all of them share a small machine)
if [ "$n" -ge 8 ]; then corpus_cpus="0-$((n - 5))" svc_cpus="$((n - 4))-$((n - 1))" cw=$((n - 4))
else corpus_cpus="0-$((n - 1))" svc_cpus=$corpus_cpus cw=$n; fi
text=data/text/train.txt
SLT_LINES=${SLT_LINES:-8000} SPREAD_LINES=${SPREAD_LINES:-30000}
voices=slt,awb,rms,kal16,en-us,en-gb+f2,en-us+m3,en-gb-x-rp+f3,en-gb-scotland+m1,en-us+f4

(taskset -c "$corpus_cpus" bash -c "$PY -m pipeline corpus --text $text --voices slt --limit $SLT_LINES \
    --out data/corpus --workers $cw && $PY -m pipeline corpus --text $text --voices $voices \
    --spread --limit $SPREAD_LINES --out data/corpus --workers $cw" > "$O/corpus.log" 2>&1) &
corpus=$!
taskset -c "$svc_cpus" env DEVICE="${SVC_DEVICE:-cuda:0}" SKIP_PRECISION=1 \
    scripts/gpu_service.sh "$O/service" > "$O/service.log" 2>&1
wait $corpus; echo "corpus rc $?"; tail -2 "$O/corpus.log"

env RUNS="asr ar" ASR_INIT=checkpoints/asr.pt ASR_LR="${ASR_LR:-6e-4}" ASR_WARMUP=200 \
    AR_ATTENTION=monotonic AR_INIT=checkpoints/tts-ar-dot.pt AR_LR="${AR_LR:-5e-4}" AR_WARMUP=200 \
    SLT_LINES=$SLT_LINES SPREAD_LINES=$SPREAD_LINES scripts/train_gpu.sh "$O/models" "${BUDGET:-400}" > "$O/train.log" 2>&1
echo "train rc $?"
env DEVICE="${SVC_DEVICE:-cuda:0}" SKIP_QUEUE=1 scripts/gpu_service.sh "$O/service" >> "$O/service.log" 2>&1
cat "$O/service.log"; tail -25 "$O/train.log"
cp runs/*.log "$O/" 2>/dev/null; ls -la "$O" "$O/models"
