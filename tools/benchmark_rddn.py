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
import contextlib
import json
import os
import shlex
import statistics
import sys
import time
from typing import Dict, List, Optional

import torch

from defect_det.utils.benchmark import cpu_model, torch_threads

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_CONFIGS = [
    os.path.join("configs", "RDDN", "synthetic", f"faster_rcnn_R18_FPN_{s}.yaml")
    for s in ("baseline", "pre", "inter", "post", "ptg", "cr1.5")
]
MODULES = ("bottom-up", "FPN", "PTG", "RPN", "R-CNN")
MIB = float(2 ** 20)

# table key -> (title, columns, number format)
TABLES = {
    "params_M": ("Parameters (M = 1e6)", MODULES + ("total",), "{:.3f}"),
    "params_MiB": ("Parameter memory (MiB)", MODULES + ("total",), "{:.2f}"),
    "feature_infer_MiB": ("Feature memory, inference forward: module output tensors (MiB)",
                          MODULES + ("total",), "{:.2f}"),
    "feature_train_MiB": ("Feature memory, training forward: module output tensors (MiB)",
                          MODULES + ("total",), "{:.2f}"),
    "activations_train_MiB": ("Activations, training forward: outputs of every submodule (MiB)",
                              MODULES + ("total",), "{:.2f}"),
    "train_memory_MiB": ("Training memory estimate (MiB): saved for backward + params + grads + optimizer",
                         ("saved", "params", "grads", "optimizer", "total"), "{:.2f}"),
    "time_ms": ("Time per image (ms, median)",
                ("train step", "inference", "bottom-up", "PTG/ref", "FPN", "RPN", "R-CNN"), "{:.1f}"),
}


# ---------------------------------------------------------------------------------------- helpers


def iter_tensors(obj):
    """Every tensor inside obj (tensors, dicts, lists, tuples, Instances, Boxes-like objects)."""
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from iter_tensors(v)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            yield from iter_tensors(v)
    elif hasattr(obj, "get_fields"):  # detectron2.structures.Instances
        yield from iter_tensors(obj.get_fields())
    elif isinstance(getattr(obj, "tensor", None), torch.Tensor):  # Boxes, RotatedBoxes, ...
        yield obj.tensor


class StorageCounter:
    """Bytes of distinct storages; holds them so addresses are not reused while counting."""

    def __init__(self, exclude_ptrs=()):
        self.storages = {}
        self.exclude = set(exclude_ptrs)

    def add(self, t: torch.Tensor):
        try:
            s = t.untyped_storage()
        except (RuntimeError, NotImplementedError):  # sparse / nested / meta tensors
            return
        ptr, n = s.data_ptr(), s.nbytes()
        if n and ptr not in self.exclude:
            self.storages[ptr] = s

    @property
    def nbytes(self) -> int:
        return sum(s.nbytes() for s in self.storages.values())

    def union(self, *others) -> int:
        ptrs = {}
        for c in (self,) + others:
            ptrs.update(c.storages)
        return sum(s.nbytes() for s in ptrs.values())


def module_parts(model) -> Dict[str, Optional[torch.nn.Module]]:
    """Column name -> the module (FPN: the backbone; its bottom_up is subtracted where needed)."""
    backbone = model.backbone
    return {
        "bottom-up": getattr(backbone, "bottom_up", backbone),
        "FPN": backbone if hasattr(backbone, "bottom_up") else None,
        "PTG": getattr(model, "ptg", None),
        "RPN": getattr(model, "proposal_generator", None),
        "R-CNN": getattr(model, "roi_heads", None),
    }


def _as_list(m):
    if m is None:
        return []
    return list(m) if isinstance(m, torch.nn.ModuleList) else [m]


def group_modules(model) -> Dict[str, List[torch.nn.Module]]:
    """Column name -> every submodule (incl. itself) that belongs to it (FPN excludes bottom_up's)."""
    parts = module_parts(model)
    bottom = list(parts["bottom-up"].modules())
    ids = {id(m) for m in bottom}
    groups = {"bottom-up": bottom}
    fpn = parts["FPN"]
    groups["FPN"] = [m for m in fpn.modules() if id(m) not in ids] if fpn is not None else []
    for k in ("PTG", "RPN", "R-CNN"):
        groups[k] = list(parts[k].modules()) if parts[k] is not None else []
    return groups


def count_params(model) -> Dict[str, Dict[str, float]]:
    def n_bytes(m):
        if m is None:
            return 0, 0
        ps = list(m.parameters())
        return sum(p.numel() for p in ps), sum(p.numel() * p.element_size() for p in ps)

    parts = module_parts(model)
    num, byt = {}, {}
    for k in ("bottom-up", "PTG", "RPN", "R-CNN"):
        num[k], byt[k] = n_bytes(parts[k])
    if parts["FPN"] is not None:
        n, b = n_bytes(parts["FPN"])
        num["FPN"], byt["FPN"] = n - num["bottom-up"], b - byt["bottom-up"]
    else:
        num["FPN"], byt["FPN"] = 0, 0
    num["total"], byt["total"] = n_bytes(model)
    return {"params_M": {k: v / 1e6 for k, v in num.items()},
            "params_MiB": {k: v / MIB for k, v in byt.items()}}


@contextlib.contextmanager
def hooks(handles: list):
    try:
        yield
    finally:
        for h in handles:
            h.remove()


# ------------------------------------------------------------------------------------ measurement
def output_counters(model, all_submodules: bool):
    """Install forward hooks; returns (handles, {column: StorageCounter})."""
    counters = {k: StorageCounter() for k in MODULES}
    handles = []

    def record(key):
        def hook(module, inputs, output):
            for t in iter_tensors(output):
                counters[key].add(t)
        return hook

    if all_submodules:
        for key, mods in group_modules(model).items():
            for m in mods:  # prepend: bottom_up's raw output, before TemplateRCNN's reference hook
                handles.append(m.register_forward_hook(record(key), prepend=True))
        return handles, counters
    parts = module_parts(model)
    handles.append(parts["bottom-up"].register_forward_hook(record("bottom-up"), prepend=True))
    if parts["FPN"] is not None:
        handles.append(parts["FPN"].register_forward_hook(record("FPN")))
    if parts["PTG"] is not None:
        for g in parts["PTG"].children():  # ModuleDict of StageGenerators (forward() itself is unused)
            for stage in (g.values() if isinstance(g, torch.nn.ModuleDict) else [g]):
                handles.append(stage.register_forward_hook(record("PTG")))
    if parts["RPN"] is not None:
        handles.append(parts["RPN"].register_forward_hook(record("RPN")))
    roi = parts["R-CNN"]
    if roi is not None:
        for name in ("box_pooler", "box_head"):
            for m in _as_list(getattr(roi, name, None)):
                handles.append(m.register_forward_hook(record("R-CNN")))
    return handles, counters


def mib_table(counters: Dict[str, StorageCounter]) -> Dict[str, float]:
    out = {k: c.nbytes / MIB for k, c in counters.items()}
    out["total"] = counters[MODULES[0]].union(*[counters[k] for k in MODULES[1:]]) / MIB
    return out


def optimizer_states(cfg) -> int:
    opt = str(getattr(cfg.SOLVER, "OPTIMIZER", "SGD")).lower()
    if opt.startswith("adam"):
        return 2
    return 1 if cfg.SOLVER.MOMENTUM > 0 else 0


def measure_memory(model, cfg, inputs, seed, device) -> Dict[str, Dict[str, float]]:
    from detectron2.utils.events import EventStorage

    res = {}
    # inference forward: module outputs
    model.eval()
    torch.manual_seed(seed)
    handles, counters = output_counters(model, all_submodules=False)
    with hooks(handles), torch.no_grad():
        model(inputs)
    res["feature_infer_MiB"] = mib_table(counters)
    del counters

    # training forward: module outputs, all submodule outputs, storages saved for backward
    model.train()
    torch.manual_seed(seed)
    params = list(model.parameters())
    saved = StorageCounter(exclude_ptrs={p.untyped_storage().data_ptr() for p in params})

    def pack(t):
        saved.add(t)
        return t

    h1, out_c = output_counters(model, all_submodules=False)
    h2, all_c = output_counters(model, all_submodules=True)
    with hooks(h1 + h2), EventStorage(0), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        losses = model(inputs)
    res["feature_train_MiB"] = mib_table(out_c)
    res["activations_train_MiB"] = mib_table(all_c)
    del losses, out_c, all_c
    p_bytes = sum(p.numel() * p.element_size() for p in params)
    g_bytes = sum(p.numel() * p.element_size() for p in params if p.requires_grad)
    mem = {
        "saved": saved.nbytes / MIB,
        "params": p_bytes / MIB,
        "grads": g_bytes / MIB,
        "optimizer": optimizer_states(cfg) * g_bytes / MIB,
    }
    del saved
    mem["total"] = sum(mem.values())
    if device.type == "cuda":
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        with EventStorage(0):
            sum(model(inputs).values()).backward()
        torch.cuda.synchronize()
        mem["cuda_peak"] = (torch.cuda.max_memory_allocated() - before + p_bytes) / MIB
        model.zero_grad(set_to_none=True)
    res["train_memory_MiB"] = mem
    return res


class ModuleTimer:
    """Forward pre/post hooks accumulating perf_counter time per part (see module doc, item 6)."""

    def __init__(self, model, device):
        self.sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
        self.acc = {}
        self.start = {}
        self.handles = []
        self.enabled = False
        # TemplateRCNN's reference hook on bottom_up exists only for TR-Inter and PTG
        self.has_ref = getattr(model, "template_mode", "none") in ("inter", "ptg")
        parts = module_parts(model)
        bottom = parts["bottom-up"]
        self._pair(bottom, "bottom-up", prepend_post=True)
        # after TemplateRCNN's reference hook (registered at construction): end of the reference
        self.handles.append(bottom.register_forward_hook(self._mark("ref", since="bottom-up:end")))
        for key, m in (("backbone", parts["FPN"]), ("RPN", parts["RPN"]), ("R-CNN", parts["R-CNN"])):
            if m is not None:
                self._pair(m, key)

    def _now(self):
        self.sync()
        return time.perf_counter()

    def _pair(self, m, key, prepend_post=False):
        def pre(module, inputs):
            if self.enabled:
                self.start[key] = self._now()

        def post(module, inputs, output):
            if not self.enabled:
                return
            t = self._now()
            self.acc[key] = self.acc.get(key, 0.0) + t - self.start.pop(key)
            self.start[key + ":end"] = t

        self.handles.append(m.register_forward_pre_hook(pre))
        self.handles.append(m.register_forward_hook(post, prepend=prepend_post))

    def _mark(self, key, since):
        def post(module, inputs, output):
            if self.enabled:
                t = self._now()
                self.acc[key] = self.acc.get(key, 0.0) + t - self.start.pop(since)
        return post

    def reset(self):
        self.acc, self.start = {}, {}

    def parts_ms(self, batch) -> Dict[str, float]:
        a = {k: v * 1e3 / batch for k, v in self.acc.items()}
        out = {"bottom-up": a.get("bottom-up", 0.0), "PTG/ref": a.get("ref", 0.0) if self.has_ref else 0.0}
        out["FPN"] = a["backbone"] - out["bottom-up"] - out["PTG/ref"] if "backbone" in a else 0.0
        out["RPN"], out["R-CNN"] = a.get("RPN", 0.0), a.get("R-CNN", 0.0)
        return out

    def remove(self):
        for h in self.handles:
            h.remove()


def train_step(model, inputs, sync):
    from detectron2.utils.events import EventStorage

    model.train()
    sync()
    t0 = time.perf_counter()
    with EventStorage(0):
        losses = model(inputs)
    sum(losses.values()).backward()
    sync()
    dt = time.perf_counter() - t0
    model.zero_grad(set_to_none=True)
    return dt


def infer_step(model, inputs, sync):
    model.eval()
    sync()
    t0 = time.perf_counter()
    with torch.no_grad():
        model(inputs)
    sync()
    return time.perf_counter() - t0


# ----------------------------------------------------------------------------------------- inputs
def make_inputs(batch, h, w, num_classes, device, seed=0, boxes_per_image=3):
    from detectron2.structures import Boxes, Instances

    g = torch.Generator().manual_seed(seed)
    inputs = []
    for _ in range(batch):
        x0 = torch.rand(boxes_per_image, generator=g) * w * 0.7
        y0 = torch.rand(boxes_per_image, generator=g) * h * 0.7
        bw = 8 + torch.rand(boxes_per_image, generator=g) * (w * 0.3 - 8)
        bh = 8 + torch.rand(boxes_per_image, generator=g) * (h * 0.3 - 8)
        inst = Instances((h, w))
        inst.gt_boxes = Boxes(torch.stack([x0, y0, x0 + bw, y0 + bh], 1).to(device))
        inst.gt_classes = torch.randint(num_classes, (boxes_per_image,), generator=g).to(device)
        inputs.append({
            "image": torch.randint(256, (3, h, w), generator=g, dtype=torch.uint8).to(device),
            "template": torch.randint(256, (3, h, w), generator=g, dtype=torch.uint8).to(device),
            "normal_image": torch.randint(256, (3, h, w), generator=g, dtype=torch.uint8).to(device),
            "is_normal": False,
            "height": h,
            "width": w,
            "instances": inst,
        })
    return inputs


# ----------------------------------------------------------------------------------------- tables
def short_names(paths: List[str]) -> List[str]:
    """Config stems minus their common '_'-separated prefix (a stem equal to the prefix keeps it)."""
    stems = [os.path.splitext(os.path.basename(p))[0] for p in paths]
    parts = [s.split("_") for s in stems]
    n = 0
    while all(len(p) > n for p in parts) and len({p[n] for p in parts}) == 1:
        n += 1
    names = ["_".join(p[n:]) or s for p, s in zip(parts, stems)] if len(stems) > 1 else stems
    seen = {}
    out = []
    for nm in names:
        seen[nm] = seen.get(nm, 0) + 1
        out.append(nm if seen[nm] == 1 else f"{nm}#{seen[nm]}")
    return out


def ratio(v, ref):
    """v / ref; None (printed "-") where ref is 0 (e.g. PTG of a model without generators)."""
    return None if ref == 0 else v / ref


def build_tables(rows: List[dict]) -> Dict[str, dict]:
    """rows: [{"name", "config", <table key>: {column: value}}] -> tables with ratios to rows[0]."""
    tables = {}
    for key, (title, columns, _) in TABLES.items():
        ref = rows[0][key]
        cols = list(columns) + (["cuda_peak"] if "cuda_peak" in ref else [])
        trows = []
        for r in rows:
            vals = {c: r[key][c] for c in cols}
            trows.append({"name": r["name"], "config": r["config"], "values": vals,
                          "ratios": {c: ratio(vals[c], ref[c]) for c in cols}})
        tables[key] = {"title": title, "columns": cols, "rows": trows}
    return tables


def format_table(key, table) -> str:
    from tabulate import tabulate

    fmt = TABLES[key][2]
    body = []
    for r in table["rows"]:
        cells = [r["name"]]
        for c in table["columns"]:
            q = r["ratios"][c]
            cells.append(f"{fmt.format(r['values'][c])} ({'-' if q is None else f'{q:.2f}x'})")
        body.append(cells)
    return tabulate(body, headers=["config"] + table["columns"], tablefmt="pipe", disable_numparse=True,
                    colalign=["left"] + ["right"] * len(table["columns"]))


# ------------------------------------------------------------------------------------------- main
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


def build(path, args):
    import defect_det  # noqa: F401  (registers the meta-architecture, heads and backbones)
    from defect_det.config import get_defect_cfg
    from detectron2.modeling import build_model

    cfg = get_defect_cfg()
    if not os.path.exists(path) and os.path.exists(os.path.join(REPO, path)):
        path = os.path.join(REPO, path)  # the default configs, from any working directory
    cfg.merge_from_file(path)
    cfg.merge_from_list(list(args.opts))
    cfg.MODEL.DEVICE = args.device
    cfg.freeze()
    torch.manual_seed(args.seed)
    return cfg, build_model(cfg)


def main(argv=None, out=None) -> dict:
    out = out or sys.stdout
    args = parse_args(argv)
    with torch_threads(args.threads):
        return _run(args, argv, out)


def _run(args, argv, out) -> dict:
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    import detectron2

    cmd = " ".join(shlex.quote(a) for a in (["python", "tools/benchmark_rddn.py"] +
                                             (list(argv) if argv is not None else sys.argv[1:])))
    h, w = args.size
    meta = {
        "command": cmd,
        "torch": torch.__version__,
        "detectron2": detectron2.__version__,
        "threads": torch.get_num_threads(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "device": str(device) + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""),
        "size": [h, w],
        "batch": args.batch,
        "iters": args.iters,
        "warmup": args.warmup,
        "seed": args.seed,
        "load_avg_start": list(os.getloadavg()),
    }
    print(f"command: {cmd}", file=out)
    print(f"torch {meta['torch']}, detectron2 {meta['detectron2']}, {meta['threads']} threads, CPU: "
          f"{meta['cpu']} ({meta['cpu_count']} logical cores), device: {meta['device']}", file=out)
    print(f"input: batch {args.batch} x 3 x {h} x {w} (random uint8 images, templates, normal images; "
          f"3 random GT boxes per image), seed {args.seed}; time: median of {args.iters} after "
          f"{args.warmup} warm-up; load average at start: "
          + " ".join(f"{x:.2f}" for x in meta["load_avg_start"]), file=out)

    busy = meta["load_avg_start"][0] + meta["threads"] > (meta["cpu_count"] or 1) + 0.5
    if busy and meta["threads"] > 1 and device.type == "cpu" and not args.no_time:
        print(f"warning: load average {meta['load_avg_start'][0]:.1f} on {meta['cpu_count']} cores: with "
              f"{meta['threads']} threads per op, oversubscription can inflate CPU timings many-fold and "
              "distort ratios (seen: x30 with 2 threads beside a 2-core job); consider --threads 1", file=out)

    names = short_names(args.configs)
    models, rows = [], []
    for name, path in zip(names, args.configs):
        cfg, model = build(path, args)
        inputs = make_inputs(args.batch, h, w, cfg.MODEL.ROI_HEADS.NUM_CLASSES, device, seed=args.seed)
        row = {"name": name, "config": path}
        row.update(count_params(model))
        row.update(measure_memory(model, cfg, inputs, args.seed, device))
        models.append((model, inputs))
        rows.append(row)

    if not args.no_time:
        timers = [ModuleTimer(m, device) for m, _ in models]
        samples = [{"train step": [], "inference": [], **{k: [] for k in TABLES["time_ms"][1][2:]}}
                   for _ in models]
        torch.manual_seed(args.seed)
        for it in range(args.warmup + args.iters):
            for (model, inputs), timer, s in zip(models, timers, samples):  # round-robin
                t_train = train_step(model, inputs, sync)
                timer.reset()
                timer.enabled = True
                t_inf = infer_step(model, inputs, sync)
                timer.enabled = False
                if it >= args.warmup:
                    s["train step"].append(t_train * 1e3 / args.batch)
                    s["inference"].append(t_inf * 1e3 / args.batch)
                    for k, v in timer.parts_ms(args.batch).items():
                        s[k].append(v)
        for t in timers:
            t.remove()
        for row, s in zip(rows, samples):
            row["time_ms"] = {k: statistics.median(v) for k, v in s.items()}
    else:
        for row in rows:
            row["time_ms"] = {k: 0.0 for k in TABLES["time_ms"][1]}

    meta["load_avg_end"] = list(os.getloadavg())
    tables = build_tables(rows)
    if args.no_time:
        del tables["time_ms"]
    print("ratios: value (value / value of the first row, " + names[0] + ")", file=out)
    for key, table in tables.items():
        print(f"\n{table['title']}\n", file=out)
        print(format_table(key, table), file=out)
    print("\nload average at end: " + " ".join(f"{x:.2f}" for x in meta["load_avg_end"]), file=out)
    result = {"meta": meta, "tables": tables}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    return result


if __name__ == "__main__":
    main()
