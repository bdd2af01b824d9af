#!/usr/bin/env python3
"""PyTorch's scaled_dot_product_attention, per backend, on the sweep `attn bench` runs on a GPU.

Times torch.nn.functional.scaled_dot_product_attention under each of the flash, efficient, cudnn
and math backends (torch.nn.attention.sdpa_kernel) on the same shapes, dtypes and masks as
`attn bench`, the same way (warm-up, CUDA events, median of the timed runs, input sets rotated,
L2 flushed before each run), with the same FLOP formula (4 * b * h * seq^2 * d, halved when causal),
and writes the results in the same JSON schema (src/cli/bench/results.rs), so that

    python3 benches/torch_sdpa.py --out torch.json
    attn bench --compare torch.json --out DIR

prints one table with time ratios ours / theirs and draws both into the plots.

Inputs are stored [batch, seq, heads, head_dim] like attn's and passed as transposed views
[batch, heads, seq, head_dim] (no copy), uniform in [-1, 1). Before timing, each backend's output is
checked on sampled query rows against a float64 reference by the rule attn uses (2 x the error of
the naive formula computed in the input precision, plus an f32 floor); a backend that fails is not
timed. A backend that is unsupported or errors is recorded as skipped with the reason; one that runs
out of memory as out_of_memory.

--dry-run prints the planned records in the schema without importing torch (for tests and to see
the sweep). Exit status: 0 when every record is ok, skipped or out of memory; 1 when a check
failed; 2 for bad arguments or no CUDA device.
"""

import argparse
import datetime
import json
import math
import os
import subprocess
import sys
import warnings

SCHEMA = "cuda-attention-bench/1"
BACKENDS = ["flash", "efficient", "cudnn", "math"]
F32_EPSILON = 2.0**-23
# The sweeps of `attn bench` on a GPU: (seqs, tokens, head dims) by default and with --quick.
DEFAULT_SWEEP = ([512, 1024, 2048, 4096, 8192, 16384], 16384, [64, 128])
QUICK_SWEEP = ([512, 1024, 2048], 4096, [128])


def int_list(text):
    return [int(x) for x in text.split(",") if x]


def str_list(text):
    return [x for x in text.split(",") if x]


def parse_args(argv):
    p = argparse.ArgumentParser(
        description="Time torch SDPA backends on attn bench's sweep; write attn's results schema."
    )
    p.add_argument("--seqs", type=int_list, help="sequence lengths (default: attn bench's GPU sweep)")
    p.add_argument("--tokens", type=int, help="batch * seq, held constant (default 16384)")
    p.add_argument("--hidden", type=int, default=2048, help="heads * head_dim (default 2048)")
    p.add_argument("--heads", type=int, help="a fixed number of heads instead of hidden / head_dim")
    p.add_argument("--head-dims", type=int_list, help="head dims (default 64,128)")
    p.add_argument("--dtypes", type=str_list, default=["bf16"], help="f16, bf16, f32 (default bf16)")
    p.add_argument(
        "--causal", nargs="?", const="yes", default="no", choices=["no", "yes", "both"],
        help="causal mask: no, yes or both (default no)",
    )
    p.add_argument("--backends", type=str_list, default=BACKENDS, help="default: " + ",".join(BACKENDS))
    p.add_argument("--warmup", type=int, default=3, help="untimed runs after the checking run")
    p.add_argument("--iters", type=int, default=20, help="timed runs per backend and shape")
    p.add_argument("--input-sets", type=int, default=3, help="input sets rotated between runs")
    p.add_argument("--no-flush", action="store_true", help="do not flush the L2 cache between runs")
    p.add_argument("--check-rows", type=int, default=32, help="query rows checked per backend and shape")
    p.add_argument("--quick", action="store_true", help="attn bench --quick's GPU sweep")
    p.add_argument("--device", type=int, default=0, help="CUDA device ordinal")
    p.add_argument("--out", help="write the results JSON here (default: stdout only)")
    p.add_argument("--dry-run", action="store_true", help="print the planned records; no torch needed")
    args = p.parse_args(argv)
    args.iters = max(1, args.iters)
    for backend in args.backends:
        if backend not in BACKENDS:
            p.error(f"unknown backend {backend!r}: use {', '.join(BACKENDS)}")
    for dtype in args.dtypes:
        if dtype not in ("f16", "bf16", "f32"):
            p.error(f"unknown dtype {dtype!r}: use f16, bf16 or f32")
    return args


def flops(batch, heads, seq, head_dim, causal):
    """4 * b * h * seq_q * seq_k * d, halved when causal: the formula attn uses."""
    full = 4.0 * batch * heads * seq * seq * head_dim
    return full / 2.0 if causal else full


def cases(args):
    """The sweep, ordered as attn orders it: dtype, head dim, mask, sequence length."""
    seqs, tokens, head_dims = QUICK_SWEEP if args.quick else DEFAULT_SWEEP
    seqs = args.seqs or seqs
    tokens = args.tokens or tokens
    head_dims = args.head_dims or head_dims
    masks = {"no": [False], "yes": [True], "both": [False, True]}[args.causal]
    planned = []
    for dtype in args.dtypes:
        for head_dim in head_dims:
            if args.heads:
                heads = args.heads
            elif args.hidden % head_dim == 0 and args.hidden >= head_dim:
                heads = args.hidden // head_dim
            else:
                raise SystemExit(f"hidden {args.hidden} is not a multiple of head_dim {head_dim}")
            for causal in masks:
                for seq in seqs:
                    planned.append(dict(dtype=dtype, head_dim=head_dim, causal=causal, seq=seq,
                                        batch=max(1, tokens // seq), heads=heads))
    return planned, tokens


def record(case, kernel, status, reason=None):
    return {
        "kernel": kernel,
        "dtype": case["dtype"],
        "causal": case["causal"],
        "batch": case["batch"],
        "seq": case["seq"],
        "heads": case["heads"],
        "head_dim": case["head_dim"],
        "mode": "dense",
        "page_size": None,
        "seq_lens": None,
        "flops": flops(case["batch"], case["heads"], case["seq"], case["head_dim"], case["causal"]),
        "status": status,
        "reason": reason,
        "check": None,
        "timing": None,
        "memory": None,
    }


def timing_stats(times_ms, flop_count):
    """Median (mean of the middle two for an even count), min, max, nearest-rank p10 and p90."""
    s = sorted(times_ms)
    n = len(s)
    median = s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2.0

    def rank(p):
        return s[min(max(math.ceil(p * n), 1), n) - 1]

    return {
        "times_ms": list(times_ms),
        "median_ms": median,
        "min_ms": s[0],
        "max_ms": s[-1],
        "p10_ms": rank(0.1),
        "p90_ms": rank(0.9),
        "tflops": flop_count / (median * 1e-3) / 1e12,
    }


def commit():
    """$ATTN_COMMIT, else a COMMIT file beside this script or its parent (the GPU pack), else git."""
    if os.environ.get("ATTN_COMMIT", "").strip():
        return os.environ["ATTN_COMMIT"].strip()
    here = os.path.dirname(os.path.abspath(__file__))
    for folder in (here, os.path.dirname(here)):
        path = os.path.join(folder, "COMMIT")
        if os.path.isfile(path):
            with open(path) as f:
                text = "".join(f.read().split())
            if text:
                return text
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=here, capture_output=True,
                              text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True).stdout.strip()
        return head + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def driver_version(ordinal):
    """nvidia-smi's driver version and the CUDA version the driver supports, e.g. '580.65.06 (CUDA 13.0)'."""
    cuda = None
    try:
        import ctypes

        version = ctypes.c_int(0)
        if ctypes.CDLL("libcuda.so.1").cuDriverGetVersion(ctypes.byref(version)) == 0:
            cuda = f"CUDA {version.value // 1000}.{(version.value % 1000) // 10}"
    except OSError:
        pass
    smi = None
    try:
        smi = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader",
                              "-i", str(ordinal)], capture_output=True, text=True,
                             check=True).stdout.strip() or None
    except (OSError, subprocess.CalledProcessError):
        pass
    if smi and cuda:
        return f"{smi} ({cuda})"
    return smi or cuda


def document(args, tokens, device, software, l2_flush_bytes, records):
    return {
        "schema": SCHEMA,
        "tool": "torch_sdpa.py",
        "backend": "gpu",
        "device": device,
        "software": software,
        "commit": commit(),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "command": " ".join(["python3", "benches/torch_sdpa.py"] + sys.argv[1:]),
        "settings": {
            "tokens": tokens,
            "hidden": args.hidden,
            "warmup": args.warmup,
            "iters": args.iters,
            "input_sets": args.input_sets,
            "l2_flush_bytes": l2_flush_bytes,
            "timer": "cuda events",
            "memory_method": "torch.cuda.max_memory_allocated() during one call minus what was "
                             "allocated before it, plus the bytes of q, k and v: q, k, v, out and "
                             "the backend's workspace, on the device",
            "check_method": f"before timing, {args.check_rows} sampled query rows of the backend's "
                            "output (input set 0) against a float64 reference for those rows, by "
                            "FlashAttention's rule (2 x the error of the naive formula in the input "
                            "precision, plus an f32 floor), applied to the sampled rows",
        },
        "records": records,
    }


def emit(doc, args):
    text = json.dumps(doc, indent=2)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    return text


def sample_rows(case, count, generator):
    """Distinct (batch, head, row) triples: corners, the middle, then seeded random ones."""
    b, h, s = case["batch"], case["heads"], case["seq"]
    target = max(1, min(count, b * h * s))
    rows = {(0, 0, 0), (0, 0, s - 1), (b - 1, h - 1, s - 1), (b - 1, h - 1, 0), (b // 2, h // 2, s // 2)}
    while len(rows) < target:
        rows.add((generator.randrange(b), generator.randrange(h), generator.randrange(s)))
    return sorted(rows)[:target]


def check_rows(torch, q, k, v, out, case, rows):
    """Max error over the sampled rows against float64, and what attn's rule allows there."""
    dtype = q.dtype
    scale = 1.0 / math.sqrt(case["head_dim"])
    max_error, allowed = 0.0, 0.0
    for b, h, i in rows:
        end = i + 1 if case["causal"] else case["seq"]
        q_row, keys, values = q[b, h, i], k[b, h, :end], v[b, h, :end]
        scores = (keys.double() @ q_row.double()) * scale
        reference = torch.softmax(scores, 0) @ values.double()
        # The naive formula in the input precision, as PyTorch computes it (attn's naive_in_precision).
        keys_scaled = (keys.float() * scale).to(dtype)
        s_low = (keys_scaled.float() @ q_row.float()).to(dtype)
        p_low = torch.softmax(s_low.float(), 0).to(dtype)
        o_low = (p_low.float() @ values.float()).to(dtype)
        baseline = (o_low.double() - reference).abs().max().item()
        allowed = max(allowed, 2.0 * baseline + 8.0 * F32_EPSILON * (1.0 + reference.abs().max().item()))
        error = (out[b, h, i].double() - reference).abs()
        error = math.inf if not torch.isfinite(error).all() else error.max().item()
        max_error = max(max_error, error)
    return {"rows": len(rows), "max_abs_error": max_error, "allowed": allowed,
            "passed": max_error <= allowed}


def short_reason(error, caught):
    """The warnings torch gave for an unusable backend, then the error, on one line."""
    parts = [str(w.message).strip() for w in caught] + [f"{type(error).__name__}: {error}"]
    text = " | ".join(" ".join(p.split()) for p in parts if p)
    return text if len(text) <= 400 else text[:397] + "..."


def run(args):
    planned, tokens = cases(args)
    if args.dry_run:
        records = [record(c, "torch-" + b, "skipped", "dry run") for c in planned for b in args.backends]
        device = {"kind": "gpu", "name": "dry run: no device queried", "driver": None,
                  "compute_capability": None, "memory_bytes": None, "processors": None}
        print(emit(document(args, tokens, device, "torch (not imported: dry run)", 0, records), args))
        return 0

    import random

    import torch
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel

    if not torch.cuda.is_available():
        print("error: no CUDA device visible to torch", file=sys.stderr)
        return 2
    dev = torch.device("cuda", args.device)
    torch.cuda.set_device(dev)
    props = torch.cuda.get_device_properties(dev)
    device = {"kind": "gpu", "name": props.name, "driver": driver_version(args.device),
              "compute_capability": f"{props.major}.{props.minor}", "memory_bytes": props.total_memory,
              "processors": props.multi_processor_count}
    try:
        cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    except (RuntimeError, ValueError):
        cudnn = None
    software = f"torch {torch.__version__} (CUDA {torch.version.cuda}, cuDNN {cudnn})"
    l2 = getattr(props, "L2_cache_size", 0) or (50 << 20)
    l2_flush_bytes = 0 if args.no_flush else 2 * l2
    flush = torch.empty(l2_flush_bytes, dtype=torch.uint8, device=dev) if l2_flush_bytes else None
    enums = {"flash": SDPBackend.FLASH_ATTENTION, "efficient": SDPBackend.EFFICIENT_ATTENTION,
             "cudnn": SDPBackend.CUDNN_ATTENTION, "math": SDPBackend.MATH}
    dtypes = {"f16": torch.float16, "bf16": torch.bfloat16, "f32": torch.float32}
    sets_n = max(1, args.input_sets)
    records = []
    total = len(planned) * len(args.backends)
    done = 0
    for dtype_name in args.dtypes:
        of_dtype = [c for c in planned if c["dtype"] == dtype_name]
        if not of_dtype:
            continue
        dtype = dtypes[dtype_name]
        length = max(c["batch"] * c["seq"] * c["heads"] * c["head_dim"] for c in of_dtype)
        generator = torch.Generator(device=dev)
        sets = []
        for s in range(sets_n):
            generator.manual_seed(2024 + s)
            sets.append([torch.empty(length, dtype=dtype, device=dev).uniform_(-1.0, 1.0, generator=generator)
                         for _ in range(3)])
        for case in of_dtype:
            b, s, h, d = case["batch"], case["seq"], case["heads"], case["head_dim"]
            n = b * s * h * d

            def views(index):
                # [b, s, h, d] storage seen as [b, h, s, d], as attn lays its tensors out.
                return [x[:n].view(b, s, h, d).transpose(1, 2) for x in sets[index]]

            for backend in args.backends:
                done += 1
                kernel = "torch-" + backend
                print(f"[{done:>3}/{total}] {kernel:<16} {dtype_name} d{d} {'causal ' if case['causal'] else ''}"
                      f"seq {s:>5} batch {b:>4} heads {h:>3} ... ", end="", file=sys.stderr, flush=True)
                rec = record(case, kernel, "ok")

                def call(index):
                    q, k, v = views(index)
                    return F.scaled_dot_product_attention(q, k, v, is_causal=case["causal"])

                try:
                    with sdpa_kernel(enums[backend]), warnings.catch_warnings(record=True) as caught:
                        warnings.simplefilter("always")
                        try:
                            # The checking run, which also measures memory: one input set in use.
                            torch.cuda.synchronize()
                            torch.cuda.empty_cache()
                            torch.cuda.reset_peak_memory_stats()
                            before = torch.cuda.memory_allocated()
                            out = call(0)
                            torch.cuda.synchronize()
                            peak = torch.cuda.max_memory_allocated() - before + 3 * n * out.element_size()
                        except torch.cuda.OutOfMemoryError as e:
                            rec.update(status="out_of_memory", reason=short_reason(e, []))
                            raise _Recorded()
                        except RuntimeError as e:
                            rec.update(status="skipped", reason=short_reason(e, caught))
                            raise _Recorded()
                        rec["memory"] = {"peak_bytes": int(peak), "space": "device"}
                        q, k, v = views(0)
                        rows = sample_rows(case, args.check_rows, random.Random(s))
                        rec["check"] = check_rows(torch, q, k, v, out, case, rows)
                        del out
                        if not rec["check"]["passed"]:
                            rec.update(status="failed_check",
                                       reason="wrong output on the checked rows: not timed")
                            raise _Recorded()
                        for w in range(args.warmup):
                            call((w + 1) % sets_n)
                        starts = [torch.cuda.Event(enable_timing=True) for _ in range(args.iters)]
                        ends = [torch.cuda.Event(enable_timing=True) for _ in range(args.iters)]
                        for i in range(args.iters):
                            if flush is not None:
                                flush.zero_()
                            starts[i].record()
                            call(i % sets_n)
                            ends[i].record()
                        torch.cuda.synchronize()
                        times = [a.elapsed_time(z) for a, z in zip(starts, ends)]
                        rec["timing"] = timing_stats(times, rec["flops"])
                except _Recorded:
                    pass
                except torch.cuda.OutOfMemoryError as e:
                    rec.update(status="out_of_memory", reason=short_reason(e, []), timing=None)
                except RuntimeError as e:
                    rec.update(status="skipped", reason=short_reason(e, []), timing=None)
                torch.cuda.empty_cache()
                records.append(rec)
                if rec["timing"]:
                    t = rec["timing"]
                    print(f"{t['median_ms']:.4f} ms, {t['tflops']:.3g} TFLOP/s", file=sys.stderr)
                else:
                    print(f"{rec['status']}: {rec['reason']}", file=sys.stderr)
        del sets
        torch.cuda.empty_cache()

    doc = document(args, tokens, device, software, l2_flush_bytes, records)
    emit(doc, args)
    print(f"{'dtype':<5} {'d':>4} {'causal':<6} {'seq':>6} {'kernel':<16} {'median ms':>10} {'TFLOP/s':>8}")
    for r in records:
        head = f"{r['dtype']:<5} {r['head_dim']:>4} {'yes' if r['causal'] else 'no':<6} {r['seq']:>6} {r['kernel']:<16}"
        if r["timing"]:
            print(f"{head} {r['timing']['median_ms']:>10.4f} {r['timing']['tflops']:>8.3g}")
        else:
            print(f"{head} {r['status']}: {r['reason']}")
    if args.out:
        print(f"wrote {args.out}")
    return 1 if any(r["status"] == "failed_check" for r in records) else 0


class _Recorded(Exception):
    """Raised to stop working on a record whose status is already set."""


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
