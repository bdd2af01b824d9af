#!/usr/bin/env python3
"""Unfused attention in numpy on the sweep `attn bench` runs on the CPU: the baseline for the CPU backend.

The program is the three steps everyone writes first, materialising the n^2 scores:

    s = (q @ k^T) * scale   (masked with -inf above the bottom-right diagonal when causal)
    p = softmax(s)          (max subtracted, exp, divided by the row sum, in place)
    o = p @ v

q, k and v are float32 [batch, heads, seq, head_dim], contiguous (numpy's best case: each product is
one batched BLAS sgemm), uniform in [-1, 1). The sweep, the FLOP formula (4 * b * h * seq^2 * d,
halved when causal) and the timing follow `attn bench` on the CPU: a checking run, warm-up, then up to
--iters timed runs on the wall clock, stopping after --host-seconds once 3 have run, input sets
rotated; the median is reported. The results use attn's schema (src/cli/bench/results.rs), so that

    python3 benches/numpy_attention.py --out numpy.json
    attn bench --dtypes f32 --compare numpy.json --out DIR

prints one table with time ratios attn / numpy and draws both into the plots. Only f32 is timed
(numpy has no bf16, and its f16 products do not use BLAS); other dtypes are recorded as skipped.

Which BLAS numpy uses, its version, the kernel it chose for this CPU and its thread count go into the
results' `software` field (numpy's build configuration and threadpoolctl, when installed). OpenBLAS
reads OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE, which some machines set and which can slow it down: the
script re-executes itself without them (--keep-openblas-env to keep them) and records what it did.

Before timing, --check-rows sampled query rows are compared with a float64 reference by attn's rule
(2 x the error of the naive formula in float32, plus an f32 floor). --dry-run prints the planned
records without importing numpy. Exit status: 0 when every record is ok or skipped, 1 when a check
failed, 2 for bad arguments.
"""

import argparse
import datetime
import json
import math
import os
import random
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_sdpa import (  # noqa: E402
    F32_EPSILON, SCHEMA, commit, int_list, record, sample_rows, str_list, timing_stats)

# attn bench's CPU sweeps (src/cli/bench/sweep.rs, CPU_DEFAULTS and CPU_QUICK): (seqs, tokens, hidden,
# head dims).
DEFAULT_SWEEP = ([128, 256, 512, 1024, 2048], 2048, 2048, [64, 128])
QUICK_SWEEP = ([128, 256, 512], 1024, 1024, [64, 128])
OPENBLAS_VARIABLES = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
REEXEC_MARK = "NUMPY_ATTENTION_REEXEC"


def parse_args(argv):
    p = argparse.ArgumentParser(description="Time unfused numpy attention on attn bench's CPU sweep.")
    p.add_argument("--seqs", type=int_list, help="sequence lengths (default: attn bench's CPU sweep)")
    p.add_argument("--tokens", type=int, help="batch * seq, held constant (default 2048)")
    p.add_argument("--hidden", type=int, help="heads * head_dim (default 2048)")
    p.add_argument("--head-dims", type=int_list, help="head dims (default 64,128)")
    p.add_argument("--dtypes", type=str_list, default=["f32"], help="f32 (f16, bf16 are recorded skipped)")
    p.add_argument("--causal", nargs="?", const="yes", default="no", choices=["no", "yes", "both"],
                   help="causal mask: no, yes or both (default no)")
    p.add_argument("--warmup", type=int, default=1, help="untimed runs after the checking run")
    p.add_argument("--iters", type=int, default=20, help="most timed runs per shape")
    p.add_argument("--host-seconds", type=float, default=2.0,
                   help="stop timing a shape after this many seconds once it has 3 runs (attn's default)")
    p.add_argument("--input-sets", type=int, default=3, help="input sets rotated between runs")
    p.add_argument("--check-rows", type=int, default=32, help="query rows checked per shape")
    p.add_argument("--quick", action="store_true", help="attn bench --quick's CPU sweep")
    p.add_argument("--keep-openblas-env", action="store_true",
                   help="keep OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE (unset by default)")
    p.add_argument("--out", help="write the results JSON here (default: stdout only)")
    p.add_argument("--dry-run", action="store_true", help="print the planned records; no numpy needed")
    args = p.parse_args(argv)
    if args.iters < 1 or args.input_sets < 1 or args.check_rows < 1 or args.warmup < 0:
        p.error("--iters, --input-sets and --check-rows need at least 1, --warmup at least 0")
    for dtype in args.dtypes:
        if dtype not in ("f16", "bf16", "f32"):
            p.error(f"unknown dtype {dtype!r}: use f32 (or f16, bf16, recorded as skipped)")
    seqs, tokens, hidden, head_dims = QUICK_SWEEP if args.quick else DEFAULT_SWEEP
    args.seqs, args.tokens = args.seqs or seqs, args.tokens or tokens
    args.hidden, args.head_dims = args.hidden or hidden, args.head_dims or head_dims
    if min(args.seqs) < 1 or args.tokens < 1:
        p.error("--seqs and --tokens need positive values")
    for d in args.head_dims:
        if d < 1 or args.hidden % d:
            p.error(f"--hidden {args.hidden} is not a multiple of head_dim {d}")
    if args.out:
        folder = os.path.dirname(os.path.abspath(args.out))
        if not os.path.isdir(folder) or not os.access(folder, os.W_OK):
            p.error(f"--out {args.out}: {folder} is not a writable folder")
    return args


def cases(args):
    """The sweep, ordered as attn orders it: dtype, head dim, mask, sequence length."""
    masks = {"no": [False], "yes": [True], "both": [False, True]}[args.causal]
    return [dict(dtype=dtype, head_dim=d, causal=causal, seq=seq, batch=max(1, args.tokens // seq),
                 heads=args.hidden // d)
            for dtype in args.dtypes for d in args.head_dims for causal in masks for seq in args.seqs]


def attention(np, q, k, v, causal):
    """The unfused program: scores, softmax in place, product. Causal: bottom-right (seq_q = seq_k)."""
    s = np.matmul(q, k.swapaxes(-1, -2))
    s *= np.float32(1.0 / math.sqrt(q.shape[-1]))
    if causal:
        above = np.triu_indices(s.shape[-1], 1)
        s[..., above[0], above[1]] = -np.inf
    s -= s.max(axis=-1, keepdims=True)
    np.exp(s, out=s)
    s /= s.sum(axis=-1, keepdims=True)
    return np.matmul(s, v)


def check(np, q, k, v, out, case, rows):
    """Max error over the sampled rows against float64, and what attn's rule allows there."""
    scale = 1.0 / math.sqrt(case["head_dim"])
    max_error, allowed = 0.0, 0.0
    for b, h, i in rows:
        end = i + 1 if case["causal"] else case["seq"]
        q_row, keys, values = q[b, h, i], k[b, h, :end], v[b, h, :end]
        scores = (keys.astype(np.float64) @ q_row.astype(np.float64)) * scale
        p = np.exp(scores - scores.max())
        reference = (p / p.sum()) @ values.astype(np.float64)
        # The naive formula in float32 (attn's naive_in_precision for f32).
        s32 = (keys * np.float32(scale)) @ q_row
        p32 = np.exp(s32 - s32.max())
        baseline = np.abs(((p32 / p32.sum()) @ values).astype(np.float64) - reference).max()
        allowed = max(allowed, 2.0 * baseline + 8.0 * F32_EPSILON * (1.0 + np.abs(reference).max()))
        error = np.abs(out[b, h, i].astype(np.float64) - reference)
        max_error = max(max_error, math.inf if not np.isfinite(error).all() else float(error.max()))
    max_error, allowed = float(max_error), float(allowed)
    return {"rows": len(rows), "max_abs_error": max_error, "allowed": allowed, "passed": max_error <= allowed}


def blas_info(np):
    """numpy's BLAS (name and version from its build configuration) and, with threadpoolctl, the kernel
    OpenBLAS chose for this CPU and its thread count."""
    parts = [f"numpy {np.__version__}"]
    try:
        blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        parts.append(f"BLAS {blas.get('name')} {blas.get('version')}")
    except Exception as error:  # noqa: BLE001 (older numpy: no dict mode)
        parts.append(f"BLAS unknown ({type(error).__name__})")
    try:
        import threadpoolctl

        for pool in threadpoolctl.threadpool_info():
            if pool.get("user_api") == "blas":
                parts.append(f"{pool.get('internal_api')} kernel {pool.get('architecture')}, "
                             f"{pool.get('num_threads')} threads")
    except ImportError:
        parts.append("threadpoolctl not installed: kernel and threads not read")
    return "; ".join(parts)


def cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


def document(args, records, software, environment_note):
    return {
        "schema": SCHEMA,
        "tool": "numpy_attention.py",
        "backend": "cpu",
        "device": {"kind": "cpu", "name": cpu_name(), "driver": None, "compute_capability": None,
                   "memory_bytes": None},
        "software": software,
        "commit": commit(),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "command": " ".join(["python3", "benches/numpy_attention.py"] + sys.argv[1:]),
        "settings": {
            "tokens": args.tokens,
            "hidden": args.hidden,
            "warmup": args.warmup,
            "iters": args.iters,
            "input_sets": args.input_sets,
            "l2_flush_bytes": 0,
            "timer": f"wall clock (time.perf_counter); {environment_note}",
            "memory_method": "tracemalloc's peak during one call (numpy reports its buffers to it) plus "
                             "the bytes of q, k and v, on the host",
            "check_method": f"before timing, {args.check_rows} sampled query rows of the output (input "
                            "set 0) against a float64 reference for those rows, by FlashAttention's rule "
                            "(2 x the error of the naive formula in float32, plus an f32 floor)",
            "max_seconds": None,
        },
        "records": records,
    }


def measure(np, case, args):
    import tracemalloc

    shape = (case["batch"], case["heads"], case["seq"], case["head_dim"])
    generator = np.random.default_rng(0)
    sets = [tuple(generator.uniform(-1.0, 1.0, shape).astype(np.float32) for _ in range(3))
            for _ in range(args.input_sets)]
    rec = record(case, "numpy", "ok")
    try:
        tracemalloc.start()
        out = attention(np, *sets[0], case["causal"])
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    except MemoryError:
        tracemalloc.stop()
        rec.update(status="out_of_memory", reason="numpy raised MemoryError")
        return rec
    rec["memory"] = {"peak_bytes": int(peak + 3 * sets[0][0].nbytes), "space": "host"}
    rows = sample_rows(case, args.check_rows, random.Random(0))
    rec["check"] = check(np, *sets[0], out, case, rows)
    del out
    if not rec["check"]["passed"]:
        rec.update(status="failed_check", reason="wrong output on the checked rows: not timed")
        return rec
    for n in range(args.warmup):
        attention(np, *sets[(n + 1) % len(sets)], case["causal"])
    times, started = [], time.perf_counter()
    while len(times) < args.iters and (len(times) < 3 or time.perf_counter() - started < args.host_seconds):
        q, k, v = sets[len(times) % len(sets)]
        begin = time.perf_counter()
        attention(np, q, k, v, case["causal"])
        times.append((time.perf_counter() - begin) * 1e3)
    rec["timing"] = timing_stats(times, rec["flops"])
    return rec


def run(args, environment_note):
    planned = cases(args)
    if args.dry_run:
        records = [record(c, "numpy", "skipped", "dry run") for c in planned]
        print(json.dumps(document(args, records, "dry run: numpy not imported", environment_note), indent=2))
        return 0
    import numpy as np

    software = blas_info(np)
    print(f"numpy_attention.py: {software}; {environment_note}", file=sys.stderr)
    records = []
    for n, case in enumerate(planned):
        if case["dtype"] != "f32":
            records.append(record(case, "numpy", "skipped", "numpy times f32 only (no bf16; f16 skips BLAS)"))
            continue
        rec = measure(np, case, args)
        timing = rec.get("timing") or {}
        print(f"[{n + 1:3}/{len(planned)}] d{case['head_dim']} seq {case['seq']:6} batch {case['batch']:4} "
              f"heads {case['heads']:3} causal {case['causal']!s:5}: {rec['status']} "
              f"{timing.get('median_ms', math.nan):10.3f} ms {timing.get('tflops', math.nan):8.4f} TFLOP/s",
              file=sys.stderr)
        records.append(rec)
    text = json.dumps(document(args, records, software, environment_note), indent=2)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    else:
        print(text)
    return 1 if any(r["status"] == "failed_check" for r in records) else 0


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    present = [name for name in OPENBLAS_VARIABLES if name in os.environ]
    if present and not args.keep_openblas_env and not args.dry_run:
        env = {key: value for key, value in os.environ.items() if key not in OPENBLAS_VARIABLES}
        env[REEXEC_MARK] = ",".join(f"{name}={os.environ[name]}" for name in present)
        os.execve(sys.executable, [sys.executable, os.path.abspath(__file__)] + argv, env)
    if os.environ.get(REEXEC_MARK):
        note = f"re-executed without {os.environ[REEXEC_MARK]}"
    elif present:
        note = "kept " + ", ".join(f"{name}={os.environ[name]}" for name in present)
    else:
        note = "OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE not set"
    return run(args, note)


if __name__ == "__main__":
    sys.exit(main())
