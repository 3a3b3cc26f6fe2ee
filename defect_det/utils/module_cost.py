"""Per-module cost of a Detectron2 detector, split into the columns of the RDDN paper's Table VIII:
bottom-up (the ResNet), FPN (backbone minus bottom-up), PTG (pseudo template generators), RPN and
R-CNN (``roi_heads``).

- parameters: :func:`count_params`;
- memory (bytes of DISTINCT tensor storages, 1 MiB = 2**20 bytes): module outputs of one inference /
  training forward, outputs of every submodule, and what autograd saves for backward plus params,
  grads and optimizer state (:func:`measure_memory`, built on :class:`StorageCounter` and
  :func:`output_counters`);
- time: :class:`ModuleTimer` (forward pre-/post-hooks per module), :func:`train_step`,
  :func:`infer_step`;
- inputs: :func:`make_inputs` (a random batch with templates, normal images and GT boxes).

The exact definition of every number: ``tools/benchmark_rddn.py --help``. The tables and the run
are in :mod:`defect_det.utils.rddn_benchmark`.
"""
import contextlib
import time
from typing import Dict, List, Optional

import torch

__all__ = [
    "MIB",
    "MODULES",
    "ModuleTimer",
    "StorageCounter",
    "count_params",
    "group_modules",
    "infer_step",
    "iter_tensors",
    "make_inputs",
    "measure_memory",
    "mib_table",
    "module_parts",
    "optimizer_states",
    "output_counters",
    "train_step",
]

MODULES = ("bottom-up", "FPN", "PTG", "RPN", "R-CNN")
"""The columns: parts of a detector whose cost is measured."""
MIB = float(2 ** 20)


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
