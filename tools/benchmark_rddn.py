#!/usr/bin/env python
"""Memory and time cost of RDDN's modules, per variant: the analogue of the RDDN paper's Table VIII.

Every config given (default: the CPU synthetic rows ``configs/RDDN/synthetic/faster_rcnn_R18_FPN_
{baseline,pre,inter,post,ptg,cr1.5}.yaml``) is built with ``build_model`` (random weights, seeded
by ``--seed``) in ONE process, fed the SAME synthetic batch, and every number is printed next to
its ratio to the FIRST config (the reference, normally the baseline): ``value (ratio x)``;
``-`` where the reference value is 0 (e.g. PTG of a model without generators).

    python tools/benchmark_rddn.py                                      # synthetic rows, 256x320
    python tools/benchmark_rddn.py --iters 20 --warmup 3 --threads 2 --json out.json
    python tools/benchmark_rddn.py --configs configs/RDDN/fabric/faster_rcnn_R50_FPN.yaml \\
        configs/RDDN/fabric/faster_rcnn_R50_FPN_{pre,inter,post,ptg}.yaml --size 800 1333 --batch 1
    python tools/benchmark_rddn.py --opts MODEL.TEMPLATE.PTG.HIDDEN_DIM 256   # overrides, every config

Inputs: ``--batch`` random uint8 images (3, H, W) (``--size H W``, default 256 x 320, already at
the network's input size; no resizing), each with a random ``template`` and ``normal_image`` of the
same size and, for training, ``instances`` with 3 random GT boxes (random classes).

Modules (the columns): **bottom-up** = ``model.backbone.bottom_up`` (the ResNet; the whole
backbone when it has no ``bottom_up``); **FPN** = the backbone minus ``bottom_up`` (lateral/output
convolutions, top block); **PTG** = ``model.ptg`` (the pseudo template generators; absent = 0);
**RPN** = ``model.proposal_generator``; **R-CNN** = ``model.roi_heads``.

The numbers (1 MiB = 2**20 bytes; every byte count is of DISTINCT tensor storages: a tensor and its
views or in-place results count once; storages are held until the pass ends, so the allocator
cannot reuse an address within one pass):

1. ``params_M`` / ``params_MiB``: ``numel`` and bytes of each module's parameters (buffers, e.g.
   BatchNorm statistics, are not counted; FPN = backbone - bottom-up; total = the whole model).
2. ``feature_infer_MiB``: feature memory of ONE inference forward (``model.eval()``, ``no_grad``)
   of the batch: bytes of the tensors each module OUTPUTS (dicts / lists / tuples / ``Instances`` /
   ``Boxes`` are searched for tensors), summed over every call of the module in the pass.
   bottom-up: its raw output ``{res2..res5}`` (recorded BEFORE TemplateRCNN's reference hook, so
   TR-Inter's [images; templates] batch counts twice); FPN: the backbone's output ``{p2..p6}``;
   PTG: the generator outputs ``G_i(C_i)``; RPN: the proposals (+ losses in training); R-CNN: the
   outputs of ``roi_heads.box_pooler`` (pooled ROI features) and of ``roi_heads.box_head`` (the
   box head's features) -- NOT the predictor's scores/deltas nor the final Instances.
   total = all of these together.
3. ``feature_train_MiB``: the same for ONE training forward (``model.train()``; TR-Post is
   inference-only so it equals the baseline here; PTG adds its reconstruction pass on the normal
   images: a second bottom-up call and the generator outputs on it).
4. ``activations_train_MiB``: the same training forward, but counting the outputs of EVERY
   submodule of each module (every conv / norm / activation / block output): the activation
   memory a module produces, closer to what the paper's "Feature" column reports for the
   backbone. Non-module ops (additions, interpolations, the reference hook's differences) are
   not seen by module hooks and not counted.
5. ``train_memory_MiB``: training memory, estimated: ``saved`` = bytes of the distinct
   non-parameter storages autograd SAVES FOR BACKWARD in one training forward (counted with
   ``torch.autograd.graph.saved_tensors_hooks``; this is what a training step holds at the peak,
   between forward and backward, besides the parameters); ``params`` = all parameters; ``grads``
   = trainable parameters; ``optimizer`` = optimizer state (AdamW: 2 tensors per trainable
   parameter, SGD with momentum: 1, plain SGD: 0, from ``SOLVER.OPTIMIZER`` /
   ``SOLVER.MOMENTUM``); ``total`` = their sum. Not a measured process peak (CPU has no
   ``max_memory_allocated``): transient buffers of single ops and allocator overhead are not in
   it. With ``--device cuda`` (not yet run on a GPU) the table also has ``cuda_peak`` =
   ``torch.cuda.max_memory_allocated`` over one training step (forward + backward) minus the
   memory allocated before it, plus params (the real peak of the step, without optimizer state).
6. ``time_ms``: milliseconds PER IMAGE (batch time / ``--batch``), the median over ``--iters``
   repetitions (after ``--warmup`` untimed ones; configs are interleaved round-robin within each
   repetition so that load changes of a shared machine hit every config alike): ``train step`` =
   forward + backward of ``model.train()`` (inside an ``EventStorage``; no optimizer step, grads
   reset to None between steps); ``inference`` = ``model.eval()`` forward under ``no_grad``
   (incl. pre/post-processing); and the inference time inside each module, from
   ``time.perf_counter`` in forward pre-/post-hooks (CUDA: synchronized in every hook):
   bottom-up (the bottom-up network alone); PTG/ref = TemplateRCNN's reference hook after the
   bottom-up (PTG: ``C_i - G_i(C_i)``; TR-Inter: ``C^I - C^T``; other modes have no hook: 0);
   FPN = backbone - bottom-up - PTG/ref; RPN; R-CNN (``roi_heads``, incl. TR-Post's similarity
   and NMS). The per-module medians need not add up to the inference median (pre/post-processing
   and medians of parts are not parts of the median).

R-CNN numbers at inference (feature memory, time) depend on how many proposals the RPN of the
random-weight model keeps (at most ``POST_NMS_TOPK_TEST`` per image) and how many boxes reach NMS,
so between variants whose features differ they also vary by chance; parameters and the
bottom-up / FPN / PTG memory depend only on shapes.

Prints the command line, torch / Detectron2 versions, thread count, CPU model and load average at
the top, so that a table can be reproduced; ``--json FILE`` writes every number and ratio.
Timings on a shared machine are noisy: compare ratios from one run, not numbers across runs.
"""
import argparse
import shlex
import sys

from defect_det.utils.rddn_benchmark import DEFAULT_CONFIGS, run_rddn_benchmark


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--configs", nargs="+", default=DEFAULT_CONFIGS,
                    help="config files; the FIRST is the reference of every ratio (default: the "
                         "synthetic baseline, pre, inter, post, ptg, cr1.5)")
    ap.add_argument("--size", nargs=2, type=int, default=[256, 320], metavar=("H", "W"))
    ap.add_argument("--batch", type=int, default=1, help="images per forward (default 1)")
    ap.add_argument("--iters", type=int, default=10, help="timed repetitions (median reported)")
    ap.add_argument("--warmup", type=int, default=2, help="untimed repetitions before (default 2)")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    ap.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-time", action="store_true", help="parameters and memory only")
    ap.add_argument("--json", default=None, metavar="FILE", help="write every number and ratio here")
    ap.add_argument("--opts", nargs="*", default=[], metavar="KEY VALUE",
                    help="config overrides applied to every config, as KEY VALUE pairs")
    args = ap.parse_args(argv)
    if len(args.opts) % 2:
        ap.error("--opts needs KEY VALUE pairs")
    if args.iters < 1 or args.batch < 1 or args.warmup < 0:
        ap.error("--iters and --batch must be >= 1, --warmup >= 0")
    return args


def main(argv=None, out=None) -> dict:
    args = parse_args(argv)
    command = " ".join(shlex.quote(a) for a in (["python", "tools/benchmark_rddn.py"] +
                                                 (list(argv) if argv is not None else sys.argv[1:])))
    return run_rddn_benchmark(args.configs, size=args.size, batch=args.batch, iters=args.iters, warmup=args.warmup,
                              threads=args.threads, device=args.device, seed=args.seed, no_time=args.no_time,
                              opts=args.opts, json_file=args.json, command=command, out=out)


if __name__ == "__main__":
    main()
