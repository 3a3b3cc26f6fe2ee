"""Shared fixtures: a tiny synthetic fabric dataset, generated and converted exactly like `make data`."""
import os

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="session")
def tiny_fabric(tmp_path_factory):
    """
    A tiny synthetic Tianchi-fabric release (seen + unseen textures), converted to COCO with the
    project's converter and registered as ``tiny_fabric_{train,test,unseen}``.

    Returns:
        dict with ``root`` (dataset folder), ``datasets_root`` (a DETECTRON2_DATASETS under which
        the builtin ``synthetic_fabric_*`` names find this data) and ``names`` (registered names).
    """
    from defect_det.data.datasets import register_tianchi_fabric
    from defect_det.data.synthetic.fabric import SyntheticFabricConfig, generate_fabric_dataset
    from defect_det.data.tianchi_convert import convert_fabric

    datasets_root = str(tmp_path_factory.mktemp("d2datasets"))
    # same folder name as the builtin synthetic set, so subprocesses can use DETECTRON2_DATASETS
    root = os.path.join(datasets_root, "synthetic_fabric")
    cfg = SyntheticFabricConfig(**TINY_SYNTH)
    generate_fabric_dataset(root, cfg)
    ann = os.path.join(root, "annotations")
    convert_fabric([os.path.join(root, "seen")], ann, prefix="fabric", test_size=8, seed=0,
                   image_root=root)
    convert_fabric([os.path.join(root, "unseen_texture")], ann, prefix="fabric_unseen", split=False,
                   image_root=root)
    names = {}
    for split, fname in (("train", "fabric_train"), ("test", "fabric_test"), ("unseen", "fabric_unseen")):
        name = f"tiny_fabric_{split}"
        register_tianchi_fabric(name, os.path.join(ann, fname + ".json"), root)
        names[split] = name
    return {"root": root, "datasets_root": datasets_root, "names": names}


# small enough to generate in a few seconds: ~30 seen + ~10 unseen-texture images of 160x128
TINY_SYNTH = dict(seed=0, width=160, height=128, seen_pieces=12, seen_normal_pieces=3,
                  unseen_pieces=4, unseen_normal_pieces=2)


def tiny_cfg(names, output_dir, **overrides):
    """The CPU demo config shrunk for tests: 128 px, batch 2, 20 iterations."""
    from defect_det.config import get_defect_cfg

    cfg = get_defect_cfg()
    cfg.merge_from_file(os.path.join(REPO, "configs/synthetic/faster_rcnn_R18_FPN_cpu.yaml"))
    cfg.merge_from_list(TINY_OPTS)
    cfg.DATASETS.TRAIN = (names["train"],)
    cfg.DATASETS.TEST = (names["test"], names["unseen"])
    cfg.OUTPUT_DIR = str(output_dir)
    for k, v in overrides.items():
        cfg.merge_from_list([k, v])
    return cfg


# command-line style overrides shared by in-process and subprocess (train_net.py) tests
TINY_OPTS = [
    "INPUT.MIN_SIZE_TRAIN", "(112, 144)", "INPUT.MAX_SIZE_TRAIN", "200",
    "INPUT.MIN_SIZE_TEST", "128", "INPUT.MAX_SIZE_TEST", "200",
    "SOLVER.IMS_PER_BATCH", "2", "SOLVER.BASE_LR", "0.002", "SOLVER.MAX_ITER", "20",
    "SOLVER.STEPS", "()", "SOLVER.WARMUP_ITERS", "5", "SOLVER.CHECKPOINT_PERIOD", "10",
    "DATALOADER.NUM_WORKERS", "0", "TEST.DETECTIONS_PER_IMAGE", "50",
    "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0",
]


# ---------------------------------------------------------------------------------- synthetic DAGM
TINY_DAGM = dict(seed=0, classes=(1, 2), size=64, train_images=8, test_images=6, defect_fraction=0.4)


@pytest.fixture(scope="session")
def tiny_dagm(tmp_path_factory):
    from defect_det.data.synthetic.dagm import SyntheticDAGMConfig, generate_dagm_dataset

    root = str(tmp_path_factory.mktemp("sdagm"))
    generate_dagm_dataset(root, SyntheticDAGMConfig(**TINY_DAGM))
    return root


def register_tiny_dagm(root):
    """Register class 1 of the ``tiny_dagm`` set as tiny_sdagm_{train,test} (once per process)."""
    from detectron2.data import DatasetCatalog

    from defect_det.data.datasets.surface import register_dagm

    for split in ("train", "test"):
        if f"tiny_sdagm_{split}" not in DatasetCatalog.list():
            register_dagm(f"tiny_sdagm_{split}", os.path.join(root, "Class1"), split)


def tiny_segdec_cfg(root, output_dir, *opts):
    """configs/SegDecNet/synthetic_dagm_cpu.yaml on the ``tiny_dagm`` set (registered here): 64 px,
    WIDTH 0.125, no loader workers, OUTPUT_DIR ``output_dir``; ``opts``: further KEY VALUE pairs."""
    from defect_det.config import get_defect_cfg

    register_tiny_dagm(root)
    cfg = get_defect_cfg()
    cfg.merge_from_file(os.path.join(REPO, "configs", "SegDecNet", "synthetic_dagm_cpu.yaml"))
    cfg.merge_from_list([
        "DATASETS.TRAIN", "('tiny_sdagm_train',)", "DATASETS.TEST", "('tiny_sdagm_test',)",
        "MODEL.SEGDEC.INPUT_SIZE", "(64, 64)", "MODEL.SEGDEC.WIDTH", "0.125",
        "DATALOADER.NUM_WORKERS", "0", "OUTPUT_DIR", str(output_dir), *opts,
    ])
    return cfg


def pytest_configure(config):
    """``slow``: subprocess training runs (``pytest -m "not slow"`` skips them)."""
    config.addinivalue_line("markers", "slow: subprocess training / CLI runs (deselect with -m 'not slow')")
