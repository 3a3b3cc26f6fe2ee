#!/usr/bin/env python
"""Benchmark of the batched Sinkhorn op: pure-PyTorch reference vs C++ (and CUDA when present).

For every B x N (= M) cell, float32, uniform marginals, eps=0.05, a fixed number of iterations
(``--iters``, tol=0 so no early exit) and loss = sum(plan * W) with a random W, it prints:
  * fwd ms:      median wall time of the forward pass (no autograd graph);
  * fwd+bwd ms:  median wall time of forward + backward w.r.t. the cost;
  * ratio:       reference time / compiled time, for fwd+bwd;
  * saved MiB:   bytes of the tensors autograd keeps between forward and backward (recorded with
                 ``torch.autograd.graph.saved_tensors_hooks``, deduplicated by storage) — the part of
                 backward memory that grows with the iteration count for the reference.
The reference is skipped entirely where B*N*N > ``--ref-max-elems`` and its fwd+bwd where its saved tensors would exceed ``--ref-mem-gib`` (estimated
as 2.5 float32 (B, N, M) tensors per iteration, about what is measured on the cells that run).

  python tools/benchmark_sinkhorn.py            # full grid B in {1, 8, 32} x N in {100, 300, 1000}
  python tools/benchmark_sinkhorn.py --quick    # B in {1, 8} x N in {100, 300}
"""
import argparse
import statistics
import time

import torch

from defect_det.layers.sinkhorn import compiled_sinkhorn_available, sinkhorn  # noqa: E402


def saved_bytes(fn):
    """Run ``fn`` (returns a loss) and return (loss, bytes of distinct storages saved for backward)."""
    storages = {}

    def pack(t):
        s = t.untyped_storage()
        storages[s.data_ptr()] = s.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = fn()
    return loss, sum(storages.values())


def sync(device):
    if device == "cuda":
        torch.cuda.synchronize()


def time_cell(impl, device, B, N, iters, reps, with_backward):
    g = torch.Generator().manual_seed(0)
    cost = torch.rand(B, N, N, generator=g).to(device)
    w = torch.randn(B, N, N, generator=g).to(device)
    fwd, both, saved = [], [], 0
    for _ in range(reps):
        sync(device)
        t0 = time.perf_counter()
        with torch.no_grad():
            sinkhorn(cost, 0.05, max_iter=iters, impl=impl)
        sync(device)
        fwd.append(time.perf_counter() - t0)
        if with_backward:
            c = cost.clone().requires_grad_(True)
            sync(device)
            t0 = time.perf_counter()
            loss, saved = saved_bytes(lambda: (sinkhorn(c, 0.05, max_iter=iters, impl=impl).plan * w).sum())
            loss.backward()
            sync(device)
            both.append(time.perf_counter() - t0)
            del c, loss
    ms = lambda xs: statistics.median(xs) * 1e3 if xs else float("nan")  # noqa: E731
    return ms(fwd), ms(both), saved / 2**20


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 8, 32])
    ap.add_argument("--size", type=int, nargs="+", default=[100, 300, 1000])
    ap.add_argument("--iters", type=int, default=50, help="Sinkhorn iterations (fixed, tol=0)")
    ap.add_argument("--reps", type=int, default=3, help="repetitions (median) for cells with B*N*N <= 1e6")
    ap.add_argument("--ref-mem-gib", type=float, default=4.0, help="skip reference fwd+bwd above this")
    ap.add_argument("--ref-max-elems", type=float, default=1e7,
                    help="skip the reference entirely where B*N*N exceeds this (it takes minutes there)")
    ap.add_argument("--quick", action="store_true", help="B in {1, 8}, N in {100, 300}")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    args = ap.parse_args()
    if args.quick:
        args.batch, args.size = [1, 8], [100, 300]
    if args.threads:
        torch.set_num_threads(args.threads)
    impls = [("reference", "cpu")]
    if compiled_sinkhorn_available("cpu"):
        impls.append(("cpp", "cpu"))
    else:
        print("defect_det._C is not built: only the reference is timed")
    if torch.cuda.is_available() and compiled_sinkhorn_available("cuda"):
        impls.append(("cpp", "cuda"))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, float32, eps=0.05, "
          f"{args.iters} iterations, loss=sum(plan*W)")
    header = f"| B | N=M | impl | fwd ms | fwd+bwd ms | fwd+bwd ratio ref/impl | saved for backward MiB |"
    print(header)
    print("|" + "---|" * 7)
    for B in args.batch:
        for N in args.size:
            reps = args.reps if B * N * N <= 1e6 else 1
            ref_both = None
            for impl, device in impls:
                if impl == "reference" and B * N * N > args.ref_max_elems:
                    ref_both = None
                    print(f"| {B} | {N} | reference | skipped (B*N*N > {args.ref_max_elems:.0e}) | - | - | - |", flush=True)
                    continue
                est_gib = 2.5 * args.iters * B * N * N * 4 / 2**30
                with_bwd = not (impl == "reference" and est_gib > args.ref_mem_gib)
                # one untimed warm-up on small cells (first-call allocations, thread pool start)
                if reps > 1:
                    time_cell(impl, device, B, N, 2, 1, with_bwd)
                f, fb, mib = time_cell(impl, device, B, N, args.iters, reps, with_bwd)
                if impl == "reference":
                    ref_both = fb if with_bwd else None
                ratio = f"{ref_both / fb:.1f}x" if (impl != "reference" and ref_both) else "-"
                fb_s = f"{fb:.1f}" if with_bwd else f"skipped (~{est_gib:.0f} GiB saved)"
                mib_s = f"{mib:.1f}" if with_bwd else "-"
                name = impl if device == "cpu" else "cuda"
                print(f"| {B} | {N} | {name} | {f:.1f} | {fb_s} | {ratio} | {mib_s} |", flush=True)


if __name__ == "__main__":
    main()
