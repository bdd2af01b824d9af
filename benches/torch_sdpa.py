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

--decode times decode steps instead, as `attn bench --decode` does: --seq-q queries per sequence (1
by default) against a context of keys, GQA (--heads query heads, 32 by default; --heads-kv key/value
heads, 8 by default, passed to SDPA with enable_gqa), over --batches x --contexts x --head-dims (the
same defaults as attn's GPU decode sweep). Each record has the same bandwidth accounting: bytes of
K, V, Q and O (each counted once) over the median time, and that as a fraction of a device-to-device
copy (Tensor.copy_) timed in the same run, recorded in settings.copy_bandwidth. K and V are one
buffer each (tens of GiB at batch 64 x 128k keys), so only q rotates between input sets; the L2 flush
makes every run read them cold. With the causal mask and more than one query, the mask is aligned
bottom-right (torch.nn.attention.bias.causal_lower_right), as attn aligns it.

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
# The decode sweeps of `attn bench --decode` on a GPU: (batches, contexts, head dims), default and --quick.
DECODE_SWEEP = ([1, 4, 16, 64], [1024, 4096, 16384, 32768, 131072], [64, 128])
DECODE_QUICK_SWEEP = ([1, 16], [1024, 8192], [128])
DECODE_HEADS, DECODE_HEADS_KV = 32, 8
COPY_RUNS = 10


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
    p.add_argument("--heads", type=int,
                   help="a fixed number of heads instead of hidden / head_dim (query heads with --decode: 32)")
    p.add_argument("--decode", action="store_true",
                   help="decode steps over --batches x --contexts instead of the sweep of --seqs")
    p.add_argument("--batches", type=int_list, help="with --decode: batch sizes (default: attn's decode sweep)")
    p.add_argument("--contexts", type=int_list, help="with --decode: keys per sequence (default: attn's)")
    p.add_argument("--heads-kv", type=int, help="with --decode: key/value heads (default 8)")
    p.add_argument("--seq-q", type=int, help="with --decode: queries per sequence (default 1)")
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
    decode_only = [f"--{name.replace('_', '-')}" for name in ("batches", "contexts", "heads_kv", "seq_q")
                   if getattr(args, name) is not None]
    if decode_only and not args.decode:
        p.error(f"{', '.join(decode_only)} need --decode")
    if args.decode and (args.seqs or args.tokens):
        p.error("--seqs and --tokens do not apply to --decode (use --batches and --contexts)")
    if args.decode and not 1 <= (args.seq_q or 1) <= 16:
        p.error("--seq-q: use 1 to 16")
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


def decode_flops(batch, heads, seq_q, context, head_dim, causal):
    """4 * b * h * d times the keys the queries see: all of the context, or with the causal mask
    (bottom-right) context - seq_q + 1 + i for query i, as attn counts them."""
    keys = sum(min(context, max(0, i + context - seq_q + 1)) if causal else context for i in range(seq_q))
    return 4.0 * batch * heads * head_dim * keys


def decode_bytes(case, element_bytes):
    """Bytes of K, V, Q and O one call moves, each counted once (attn's formula)."""
    kv = 2 * case["batch"] * case["context"] * case["heads_kv"]
    qo = 2 * case["batch"] * case["seq"] * case["heads"]
    return (kv + qo) * case["head_dim"] * element_bytes


ELEMENT_BYTES = {"f16": 2, "bf16": 2, "f32": 4}


def decode_cases(args):
    """attn bench --decode's sweep, ordered as attn orders it: dtype, head dim, mask, batch, context."""
    batches, contexts, head_dims = DECODE_QUICK_SWEEP if args.quick else DECODE_SWEEP
    batches = args.batches or batches
    contexts = args.contexts or contexts
    head_dims = args.head_dims or head_dims
    heads = args.heads or DECODE_HEADS
    heads_kv = args.heads_kv or DECODE_HEADS_KV
    seq_q = args.seq_q or 1
    if heads % heads_kv:
        raise SystemExit(f"--heads {heads} is not a multiple of --heads-kv {heads_kv}")
    masks = {"no": [False], "yes": [True], "both": [False, True]}[args.causal]
    planned = []
    for dtype in args.dtypes:
        for head_dim in head_dims:
            for causal in masks:
                for batch in batches:
                    for context in contexts:
                        planned.append(dict(dtype=dtype, head_dim=head_dim, causal=causal, seq=seq_q,
                                            batch=batch, heads=heads, heads_kv=heads_kv, context=context))
    return planned, max(batches) * seq_q


def cases(args):
    """The sweep, ordered as attn orders it: dtype, head dim, mask, sequence length."""
    if args.decode:
        return decode_cases(args)
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
    decode = "context" in case
    if decode:
        count = decode_flops(case["batch"], case["heads"], case["seq"], case["context"], case["head_dim"],
                             case["causal"])
    else:
        count = flops(case["batch"], case["heads"], case["seq"], case["head_dim"], case["causal"])
    return {
        "kernel": kernel,
        "dtype": case["dtype"],
        "causal": case["causal"],
        "batch": case["batch"],
        "seq": case["seq"],
        "heads": case["heads"],
        "head_dim": case["head_dim"],
        "mode": "decode" if decode else "dense",
        "page_size": None,
        "seq_lens": None,
        "context": case.get("context"),
        "heads_kv": case.get("heads_kv"),
        "split_kv": None,
        "splits": None,
        "gqa_packing": None,
        "bytes": decode_bytes(case, ELEMENT_BYTES[case["dtype"]]) if decode else None,
        "bandwidth_gb_s": None,
        "copy_fraction": None,
        "flops": count,
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


def document(args, tokens, device, software, l2_flush_bytes, records, copies=()):
    hidden = args.hidden
    if args.decode:
        # attn's: query heads * the first head dim.
        head_dims = args.head_dims or (DECODE_QUICK_SWEEP if args.quick else DECODE_SWEEP)[2]
        hidden = (args.heads or DECODE_HEADS) * head_dims[0]
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
            "hidden": hidden,
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
            "copy_bandwidth": list(copies),
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
    """Max error over the sampled rows against float64, and what attn's rule allows there. Query head h
    reads key/value head h // (heads / heads_kv); the causal mask is aligned bottom-right."""
    dtype = q.dtype
    scale = 1.0 / math.sqrt(case["head_dim"])
    keys_total = case.get("context", case["seq"])
    group = case["heads"] // case.get("heads_kv", case["heads"])
    max_error, allowed = 0.0, 0.0
    for b, h, i in rows:
        end = min(keys_total, i + keys_total - case["seq"] + 1) if case["causal"] else keys_total
        q_row, keys, values = q[b, h, i], k[b, h // group, :end], v[b, h // group, :end]
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


def gb_per_s(count, ms):
    """count bytes in ms milliseconds, in GB/s (1e9 bytes); 0 for a time that is not positive."""
    return count / (ms * 1e-3) / 1e9 if ms > 0 else 0.0


def copy_bandwidth(torch, src, dst, flush, name):
    """A device-to-device copy of src into dst (Tensor.copy_), timed by CUDA events after the L2 flush,
    median of COPY_RUNS after one untimed copy; bytes counted read + written, as attn counts them."""
    dst.copy_(src)
    starts = [torch.cuda.Event(enable_timing=True) for _ in range(COPY_RUNS)]
    ends = [torch.cuda.Event(enable_timing=True) for _ in range(COPY_RUNS)]
    for i in range(COPY_RUNS):
        if flush is not None:
            flush.zero_()
        starts[i].record()
        dst.copy_(src)
        ends[i].record()
    torch.cuda.synchronize()
    times = [a.elapsed_time(z) for a, z in zip(starts, ends)]
    median = timing_stats(times, 0.0)["median_ms"]
    count = 2 * src.numel() * src.element_size()
    return {"space": "device", "bytes": count, "times_ms": times, "median_ms": median,
            "bandwidth_gb_s": gb_per_s(count, median),
            "method": f"device-to-device copy (torch Tensor.copy_) of {count // 2} bytes on {name}, timed by "
                      f"CUDA events after the L2 flush, median of {COPY_RUNS}"}


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
    from torch.nn.attention.bias import causal_lower_right

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
    copies = []
    total = len(planned) * len(args.backends)
    done = 0
    for dtype_name in args.dtypes:
        of_dtype = [c for c in planned if c["dtype"] == dtype_name]
        if not of_dtype:
            continue
        dtype = dtypes[dtype_name]
        generator = torch.Generator(device=dev)
        k_all = v_all = None

        def uniform(length, seed):
            generator.manual_seed(seed)
            return torch.empty(length, dtype=dtype, device=dev).uniform_(-1.0, 1.0, generator=generator)

        if args.decode:
            # q per input set; K and V one buffer each, for the largest step.
            q_len = max(c["batch"] * c["seq"] * c["heads"] * c["head_dim"] for c in of_dtype)
            kv_len = max(c["batch"] * c["context"] * c["heads_kv"] * c["head_dim"] for c in of_dtype)
            sets = [[uniform(q_len, 2024 + s)] for s in range(sets_n)]
            k_all = uniform(kv_len, 7001)
            v_all = torch.empty_like(k_all)
            if not copies:
                copies.append(copy_bandwidth(torch, k_all, v_all, flush, props.name))
            v_all.uniform_(-1.0, 1.0, generator=generator)
        else:
            length = max(c["batch"] * c["seq"] * c["heads"] * c["head_dim"] for c in of_dtype)
            sets = [[uniform(length, 2024 + s) for _ in range(3)] for s in range(sets_n)]
        for case in of_dtype:
            b, s, h, d = case["batch"], case["seq"], case["heads"], case["head_dim"]
            n = b * s * h * d
            context, heads_kv = case.get("context", s), case.get("heads_kv", h)
            n_kv = b * context * heads_kv * d
            # Bytes of the inputs in use, beside what the call allocates.
            input_bytes = (n + 2 * n_kv) * ELEMENT_BYTES[dtype_name]

            def views(index):
                # [b, s, h, d] storage seen as [b, h, s, d], as attn lays its tensors out.
                if args.decode:
                    q = sets[index][0][:n].view(b, s, h, d).transpose(1, 2)
                    k, v = (x[:n_kv].view(b, context, heads_kv, d).transpose(1, 2) for x in (k_all, v_all))
                    return [q, k, v]
                return [x[:n].view(b, s, h, d).transpose(1, 2) for x in sets[index]]

            for backend in args.backends:
                done += 1
                kernel = "torch-" + backend
                shape = f"context {context:>6} heads_kv {heads_kv:>2}" if args.decode else ""
                print(f"[{done:>3}/{total}] {kernel:<16} {dtype_name} d{d} {'causal ' if case['causal'] else ''}"
                      f"seq {s:>5} batch {b:>4} heads {h:>3} {shape}... ", end="", file=sys.stderr, flush=True)
                rec = record(case, kernel, "ok")

                def call(index):
                    q, k, v = views(index)
                    if not args.decode:
                        return F.scaled_dot_product_attention(q, k, v, is_causal=case["causal"])
                    extra = {"enable_gqa": True} if heads_kv != h else {}
                    if case["causal"] and s > 1:
                        # SDPA's is_causal is aligned top-left; decode's queries are the last rows.
                        extra["attn_mask"] = causal_lower_right(s, context)
                    return F.scaled_dot_product_attention(q, k, v, **extra)

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
                            peak = torch.cuda.max_memory_allocated() - before + input_bytes
                        except torch.cuda.OutOfMemoryError as e:
                            rec.update(status="out_of_memory", reason=short_reason(e, []))
                            raise _Recorded()
                        except (RuntimeError, TypeError) as e:
                            # TypeError: an argument this torch does not take (enable_gqa before 2.5).
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
                        if args.decode:
                            median = rec["timing"]["median_ms"]
                            rec["bandwidth_gb_s"] = gb_per_s(rec["bytes"], median)
                            if copies and copies[0]["bandwidth_gb_s"] > 0:
                                rec["copy_fraction"] = rec["bandwidth_gb_s"] / copies[0]["bandwidth_gb_s"]
                except _Recorded:
                    pass
                except torch.cuda.OutOfMemoryError as e:
                    rec.update(status="out_of_memory", reason=short_reason(e, []), timing=None)
                except (RuntimeError, TypeError) as e:
                    rec.update(status="skipped", reason=short_reason(e, []), timing=None)
                torch.cuda.empty_cache()
                records.append(rec)
                if rec["timing"]:
                    t = rec["timing"]
                    rate = (f"{rec['bandwidth_gb_s']:.4g} GB/s" if args.decode else f"{t['tflops']:.3g} TFLOP/s")
                    print(f"{t['median_ms']:.4f} ms, {rate}", file=sys.stderr)
                else:
                    print(f"{rec['status']}: {rec['reason']}", file=sys.stderr)
        del sets, k_all, v_all
        torch.cuda.empty_cache()

    doc = document(args, tokens, device, software, l2_flush_bytes, records, copies)
    emit(doc, args)
    if args.decode:
        print(f"{'dtype':<5} {'d':>4} {'causal':<6} {'batch':>5} {'context':>7} {'kernel':<16} {'median ms':>10} "
              f"{'GB/s':>8} {'copy':>6}")
    else:
        print(f"{'dtype':<5} {'d':>4} {'causal':<6} {'seq':>6} {'kernel':<16} {'median ms':>10} {'TFLOP/s':>8}")
    for r in records:
        mask = "yes" if r["causal"] else "no"
        if args.decode:
            head = f"{r['dtype']:<5} {r['head_dim']:>4} {mask:<6} {r['batch']:>5} {r['context']:>7} {r['kernel']:<16}"
        else:
            head = f"{r['dtype']:<5} {r['head_dim']:>4} {mask:<6} {r['seq']:>6} {r['kernel']:<16}"
        if r["timing"] and args.decode:
            copy = f"{100 * r['copy_fraction']:.1f}%" if r["copy_fraction"] is not None else "-"
            print(f"{head} {r['timing']['median_ms']:>10.4f} {r['bandwidth_gb_s']:>8.4g} {copy:>6}")
        elif r["timing"]:
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
