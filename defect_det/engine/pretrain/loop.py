"""The pre-training run (:func:`run_pretraining`): data, model, optimizer, resumable checkpoints, metrics,
validation and the exported backbone with its JSON sidecar."""
import json
import logging
import os
import time
from collections import OrderedDict, deque

import numpy as np
import torch
from torch import nn

from ...data.synthetic.fabric import DEFECT_TYPES, TEXTURE_FAMILIES
from .data import load_pretrain_records, split_by_piece
from .export import export_backbone, sha256_file
from .model import lr_factor, prepare_pretrain_cfg
from .objectives import build_objective
from .settings import (
    AUTHOR,
    CHECKPOINT_NAME,
    HELD_OUT_FAMILIES,
    METRICS_NAME,
    SIDECAR_NAME,
    WEIGHTS_NAME,
    PretrainSettings,
)

__all__ = ["run_pretraining"]

logger = logging.getLogger("defect_det.engine.pretrain")  # one logger for the whole package


# ----------------------------------------------------------------------------------------------
# the training run
# ----------------------------------------------------------------------------------------------
def _atomic_json(path, obj):
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=1, ensure_ascii=False, default=float)
    os.replace(tmp, path)


def _param_groups(net, weight_decay):
    decay, no_decay = [], []
    norm_types = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)
    for m in net.modules():
        for name, p in m.named_parameters(recurse=False):
            if not p.requires_grad:
                continue
            (no_decay if isinstance(m, norm_types) or name == "bias" else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _backbone_config(cfg):
    """The config keys that shape the pre-trained network and its input (others do not matter)."""
    cfg = prepare_pretrain_cfg(cfg)
    return OrderedDict([
        ("MODEL.BACKBONE.NAME", cfg.MODEL.BACKBONE.NAME),
        ("MODEL.RESNETS", json.loads(json.dumps(cfg.MODEL.RESNETS))),
        ("MODEL.PIXEL_MEAN", list(cfg.MODEL.PIXEL_MEAN)),
        ("MODEL.PIXEL_STD", list(cfg.MODEL.PIXEL_STD)),
        ("INPUT.FORMAT", cfg.INPUT.FORMAT),
    ])


def _run_identity(settings, cfg, data_desc, families, n_train, n_val):
    d = settings.to_dict()
    if d["objective"] == "labels":
        del d["objective"]  # the only objective before there were two: earlier finished runs stay valid
    return OrderedDict([
        ("settings", d),
        ("backbone_config", _backbone_config(cfg)),
        ("data", OrderedDict([("root", data_desc["root"]), ("seed", data_desc["seed"]),
                              ("config", data_desc.get("config"))])),
        ("families", list(families)),
        ("train_images", n_train),
        ("val_images", n_val),
    ])


def _window_mean(entries):
    """Mean of each key over a list of ``{name: float}`` (NaN entries skipped)."""
    keys = list(OrderedDict.fromkeys(k for e in entries for k in e))
    out = OrderedDict()
    for k in keys:
        vals = [e[k] for e in entries if k in e and np.isfinite(e[k])]
        out[k] = float(np.mean(vals)) if vals else float("nan")
    return out


def _diff_keys(a, b, prefix=""):
    out = []
    for k in sorted(set(a) | set(b)):
        va, vb = a.get(k), b.get(k)
        if isinstance(va, dict) and isinstance(vb, dict):
            out += _diff_keys(va, vb, prefix + k + ".")
        elif va != vb:
            out.append(prefix + k)
    return out


def _read_metrics(path, upto):
    """Lines of ``metrics.jsonl`` with iteration <= ``upto`` (a resumed run rewrites the rest)."""
    if not os.path.isfile(path):
        return []
    keep = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if line:
                d = json.loads(line)
                if d.get("iteration", 0) <= upto:
                    keep.append(line)
    return keep


def run_pretraining(cfg, settings: PretrainSettings, data_root, output_dir, *, resume=False,
                    checkpoint_period=500, eval_period=None, log_period=20, stop_at=None, workers=0,
                    held_out=HELD_OUT_FAMILIES, benchmark_seed=None, command=None, save_dtype="float32",
                    extra_info=None):
    """
    Pre-train the bottom-up network of ``cfg`` on the set in ``data_root``; write into ``output_dir``:
    ``checkpoint.pth`` (every ``checkpoint_period`` iterations: model with heads, optimizer, schedule,
    iteration, RNG states, recent losses, elapsed time), ``metrics.jsonl`` (training losses every
    ``log_period``, validation metrics every ``eval_period``), and at the end ``backbone.pth``
    (:func:`export_backbone`) and ``backbone.json`` (the sidecar: command, run identity, data, time,
    final train / validation metrics, sha256).

    A run whose ``backbone.json`` exists with the same identity is not recomputed (returns that
    sidecar); a different one, or an existing checkpoint without ``resume``, is a ``FileExistsError``.

    Args:
        cfg: a detector config (``load_defect_cfg``); its backbone, PIXEL_MEAN/STD, INPUT.FORMAT and
            MODEL.DEVICE are used.
        stop_at (int or None): stop after this many iterations (checkpoint written), to continue
            later with ``resume=True``.
        save_dtype: "float32" or "float16" for the exported weights.
    Returns:
        dict: the sidecar (finished), or ``{"stopped_at": iteration, ...}`` when stopped early.
    """
    settings.validate()
    if save_dtype not in ("float32", "float16"):
        raise ValueError(f"save_dtype must be float32 or float16, got {save_dtype!r}")
    eval_period = checkpoint_period if eval_period is None else eval_period
    if checkpoint_period < 1 or log_period < 1 or eval_period < 0:
        raise ValueError(f"checkpoint_period ({checkpoint_period}) and log_period ({log_period}) must be >= 1, "
                         f"eval_period ({eval_period}) >= 0")
    os.makedirs(output_dir, exist_ok=True)
    ckpt_path = os.path.join(output_dir, CHECKPOINT_NAME)
    weights_path = os.path.join(output_dir, WEIGHTS_NAME)
    sidecar_path = os.path.join(output_dir, SIDECAR_NAME)
    metrics_path = os.path.join(output_dir, METRICS_NAME)

    records, data_desc = load_pretrain_records(data_root, held_out, benchmark_seed)
    families = tuple(f for f in TEXTURE_FAMILIES if f in {r.family for r in records})
    train_idx, val_idx = split_by_piece(records, settings.val_fraction, settings.seed)
    mean = torch.tensor(cfg.MODEL.PIXEL_MEAN, dtype=torch.float32).view(-1, 1, 1)
    std = torch.tensor(cfg.MODEL.PIXEL_STD, dtype=torch.float32).view(-1, 1, 1)
    task = build_objective(records, families, train_idx, val_idx, settings, mean, std, cfg.INPUT.FORMAT)
    # JSON round trip: the form it has in backbone.json / checkpoint.pth (lists, not tuples)
    identity = json.loads(json.dumps(_run_identity(settings, cfg, data_desc, families, task.num_train,
                                                   len(val_idx))))

    if os.path.isfile(sidecar_path):
        with open(sidecar_path, encoding="utf-8") as f:
            done = json.load(f)
        if identity == done.get("run") and os.path.isfile(weights_path) \
                and sha256_file(weights_path) == done.get("sha256"):
            logger.info(f"{sidecar_path}: this run is already finished ({weights_path}); nothing to do")
            done["already_finished"] = True
            return done
        differs = _diff_keys(identity, done.get("run", {})) or "its backbone.pth changed"
        raise FileExistsError(f"{output_dir} holds a finished pre-training that differs ({differs}); "
                              "choose another --output-dir")

    device = torch.device(cfg.MODEL.DEVICE)
    torch.manual_seed(settings.seed)
    net = task.build_net(cfg).to(device)
    opt = torch.optim.AdamW(_param_groups(net, settings.weight_decay), lr=settings.lr)
    start_iter, elapsed, window = 0, 0.0, deque(maxlen=max(log_period, 20))
    if os.path.isfile(ckpt_path):
        state = torch.load(ckpt_path, map_location="cpu")
        if not resume:
            raise FileExistsError(f"{ckpt_path} exists (iteration {state['iteration']}): pass --resume to "
                                  "continue it, or choose another --output-dir")
        if identity != state["run"]:
            raise ValueError(f"{ckpt_path}: cannot resume: the run differs in {_diff_keys(identity, state['run'])}")
        net.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        start_iter = int(state["iteration"])
        elapsed = float(state["elapsed_seconds"])
        window.extend(w if isinstance(w, dict) else dict(zip(("loss_family", "loss_defect", "family_acc"), w))
                      for w in state["window"])
        torch.set_rng_state(state["rng"]["torch"])
        logger.info(f"resumed {ckpt_path} at iteration {start_iter}")
    elif resume:
        logger.info(f"--resume: no checkpoint in {output_dir}, starting from iteration 0")

    data = task.batches()
    stop = settings.iters if stop_at is None else max(min(int(stop_at), settings.iters), start_iter)

    metric_lines = _read_metrics(metrics_path, start_iter)
    with open(metrics_path, "w", encoding="utf-8") as f:
        f.writelines(line + "\n" for line in metric_lines)

    def log_metrics(d):
        with open(metrics_path, "a", encoding="utf-8") as f:
            f.write(json.dumps(d, default=float) + "\n")

    def save_checkpoint(next_iter):
        state = {
            "iteration": next_iter, "model": net.state_dict(), "optimizer": opt.state_dict(),
            "scheduler": {"iteration": next_iter, "schedule": settings.schedule},
            "rng": {"torch": torch.get_rng_state()}, "run": identity,
            "elapsed_seconds": elapsed, "window": list(window),
            "data_position": {"iteration": next_iter, "note": "batches are a pure function of (seed, iteration)"},
        }
        torch.save(state, ckpt_path + ".tmp")
        os.replace(ckpt_path + ".tmp", ckpt_path)

    def run_eval(it):
        t = time.perf_counter()
        m = task.evaluate(net, device)
        logger.info(f"iter {it}: validation ({m['n']} images, {time.perf_counter() - t:.1f}s): "
                    + ", ".join(f"{k} {v:.4f}" for k, v in m.items() if isinstance(v, float)))
        log_metrics({"iteration": it, "val": m})
        return m

    logger.info(f"pre-training {type(net.bottom_up).__name__} ({sum(p.numel() for p in net.bottom_up.parameters())} "
                f"parameters, objective {settings.objective}) on {task.num_train} images ({len(val_idx)} validation), "
                f"families {list(families)}, input {settings.input_mode}, iterations {start_iter}..{stop} of "
                f"{settings.iters}, batch {settings.batch_size}, "
                f"{torch.get_num_threads()} threads")
    loader = torch.utils.data.DataLoader(data, batch_size=None, sampler=range(start_iter, stop),
                                         num_workers=workers)
    net.train()
    t_last, it_last = time.perf_counter(), start_iter
    t_mark = t_last
    for it, batch in zip(range(start_iter, stop), loader):
        for g in opt.param_groups:
            g["lr"] = settings.lr * lr_factor(it, settings)
        losses, stats = task.losses(net, batch, device)
        loss = sum(losses.values())
        if not torch.isfinite(loss):
            raise FloatingPointError(f"pre-training loss became {float(loss)} at iteration {it} ({losses})")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if settings.clip_grad > 0:
            nn.utils.clip_grad_norm_(net.parameters(), settings.clip_grad)
        opt.step()
        window.append(OrderedDict([(k, float(v)) for k, v in losses.items()] + list(stats.items())))
        done_iters = it + 1
        if done_iters % log_period == 0 or done_iters == stop:
            now = time.perf_counter()
            ips = (done_iters - it_last) / max(now - t_last, 1e-9)  # data wait included, evaluation not
            eta = (settings.iters - done_iters) / max(ips, 1e-9)
            avg = _window_mean(list(window)[-log_period:])
            total = sum(v for k, v in avg.items() if k.startswith("loss_"))
            eta_s = time.strftime("%H:%M:%S", time.gmtime(eta)) if eta < 86400 else f"{eta / 3600:.0f}h"
            logger.info(f"iter {done_iters}/{settings.iters}  loss {total:.4f} ("
                        + ", ".join(f"{k[5:] if k.startswith('loss_') else k} {v:.4f}" for k, v in avg.items())
                        + f")  lr {opt.param_groups[0]['lr']:.2e}  {ips:.2f} it/s  ETA {eta_s}")
            log_metrics(OrderedDict([("iteration", done_iters), ("loss", total)] + list(avg.items())
                                    + [("lr", opt.param_groups[0]["lr"]), ("it_per_s", ips)]))
            t_last, it_last = time.perf_counter(), done_iters
        if eval_period and done_iters % eval_period == 0 and done_iters < settings.iters:
            t_eval = time.perf_counter()
            run_eval(done_iters)
            t_last += time.perf_counter() - t_eval
        now = time.perf_counter()
        elapsed += now - t_mark
        t_mark = now
        if done_iters % checkpoint_period == 0 or done_iters == stop:
            save_checkpoint(done_iters)
    if stop < settings.iters:
        logger.info(f"stopped at iteration {stop} of {settings.iters}: {ckpt_path}; continue with --resume")
        return {"stopped_at": stop, "checkpoint": ckpt_path}

    t0 = time.perf_counter()
    val_metrics = run_eval(settings.iters)
    elapsed += time.perf_counter() - t0
    sha = export_backbone(net, weights_path, dtype=getattr(torch, save_dtype),
                          author=f"{AUTHOR} (input={settings.input_mode}, seed={settings.seed})")
    avg = _window_mean(list(window)[-log_period:])
    type_counts = OrderedDict((t, sum(t in r.defect_types for r in records)) for t in DEFECT_TYPES)
    sidecar = OrderedDict([
        ("weights", WEIGHTS_NAME), ("sha256", sha), ("size_bytes", os.path.getsize(weights_path)),
        ("format", "Detectron2 checkpoint {'model': {'" + net.key_prefix + "<name>': tensor}, "
                   "'__author__', 'matching_heuristics': False}; load with MODEL.WEIGHTS"),
        ("key_prefix", net.key_prefix), ("num_tensors", len(net.bottom_up.state_dict())),
        ("dtype", save_dtype),
        ("command", command), ("seed", settings.seed), ("iters", settings.iters),
        ("input_mode", settings.input_mode),
        ("seconds", round(elapsed, 1)),
        ("finished", time.strftime("%Y-%m-%dT%H:%M:%S%z")),
        ("threads", torch.get_num_threads()), ("torch", torch.__version__),
        ("objective", settings.objective),
        ("labels", task.describe()),
        ("data", OrderedDict([("root", data_desc["root"]), ("generator", data_desc["generator"]),
                              ("version", data_desc["version"]), ("seed", data_desc["seed"]),
                              ("images", len(records)), ("normal_images", sum(r.is_normal for r in records)),
                              ("pieces", len({r.piece for r in records})),
                              ("train_images", task.num_train), ("val_images", len(val_idx)),
                              ("held_out_families", sorted(held_out)),
                              ("images_per_defect_type", type_counts),
                              ("generator_config", data_desc.get("config"))])),
        ("final_train", OrderedDict([("loss", sum(v for k, v in avg.items() if k.startswith("loss_")))]
                                    + list(avg.items())
                                    + [("over_last_iterations", min(len(window), log_period))])),
        ("val", val_metrics),
        ("run", identity),
    ])
    if extra_info:
        sidecar.update(extra_info)
    _atomic_json(sidecar_path, sidecar)
    logger.info(f"wrote {weights_path} ({sidecar['size_bytes'] / 1e6:.1f} MB, sha256 {sha}) and {sidecar_path}")
    return sidecar
