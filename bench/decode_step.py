"""Per-step decoder time with the KV cache against full recomputation.

    python bench/decode_step.py [--json]

A small Transformer decoder (dot cross-attention) is advanced to 50, 200 and 800 decoded
positions; one more step is then timed (a) incrementally, with the self-attention cache and
the memory projection computed once, and (b) by recomputing the whole prefix, as a decoder
without a cache must. The last line with --json is
{"cached_ms": {"50": .., "200": .., "800": ..}, "full_ms": {...}, ...}.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parents[1])  # the repo, not bench/ (bench/queue.py)

import torch  # noqa: E402

from models.seq2seq import Seq2SeqDims, TokenTransformer  # noqa: E402

LENGTHS = (50, 200, 800)


def _median_ms(fn, repeats: int) -> float:
    fn()  # warm up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


@torch.no_grad()
def run(repeats: int = 20, batch: int = 4, threads: int = 1) -> dict:
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    dims = Seq2SeqDims(vocab_size=256, d_model=256, n_heads=4, d_ff=1024, n_encoder_layers=2,
                       n_decoder_layers=4)
    model = TokenTransformer(dims).eval()
    source = torch.randint(3, 256, (batch, 100))
    memory, mask = model.encode(source)
    cached, full = {}, {}
    for length in LENGTHS:
        prefix = torch.randint(3, 256, (batch, length))
        state = model.init_decoder(memory, mask, source)
        _, state = model.decode_step(prefix, state)  # fill the cache with `length` positions
        last = prefix[:, -1:]

        holder = [state]

        def cached_step(holder=holder, last=last):
            _, holder[0] = model.decode_step(last, holder[0])  # +1 position: negligible over the run

        def full_step(prefix=prefix):
            model(source, prefix)  # everything from scratch, memory included

        cached[str(length)] = round(_median_ms(cached_step, repeats), 3)
        full[str(length)] = round(_median_ms(full_step, max(3, repeats // 4)), 3)
    return {
        "cached_ms": cached,
        "full_ms": full,
        "speedup_at_800": round(full["800"] / cached["800"], 1),
        "cached_growth_50_to_800": round(cached["800"] / cached["50"], 2),
        "batch": batch, "threads": threads, "d_model": dims.d_model,
        "decoder_layers": dims.n_decoder_layers, "machine": platform.processor() or platform.machine(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    result = run(args.repeats, args.batch, args.threads)
    if args.json:
        print(json.dumps(result))
    else:
        for length in LENGTHS:
            key = str(length)
            print(f"{length:>4} steps: cached {result['cached_ms'][key]:8.3f} ms   "
                  f"full {result['full_ms'][key]:8.3f} ms")


if __name__ == "__main__":
    main()
