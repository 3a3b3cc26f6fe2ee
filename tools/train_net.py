#!/usr/bin/env python
"""
Train / evaluate a defect_det model with Detectron2's DefaultTrainer and launch.

    python tools/train_net.py --config-file configs/synthetic/faster_rcnn_R18_FPN_cpu.yaml
    python tools/train_net.py --config-file CFG --eval-only MODEL.WEIGHTS output/.../model_final.pth
    python tools/train_net.py --config-file CFG --resume            # continue from last_checkpoint
    python tools/train_net.py --config-file CFG --num-gpus 8        # DDP; on a CPU-only machine
                                                                    # N gloo processes
    # multi-machine: --num-machines M --machine-rank R --dist-url tcp://HOST:PORT on every machine

Trailing ``KEY VALUE`` pairs override the config. ``TEST.AUG.ENABLED True`` (SegDecNet) also
evaluates with test-time augmentation, reported as ``<dataset>_TTA``. ``--vis`` writes prediction panels for a few
images of every test dataset to OUTPUT_DIR/vis/<dataset>/.
"""
from detectron2.engine import launch

from defect_det.engine.train_net import get_parser, main

if __name__ == "__main__":
    args = get_parser(epilog=__doc__).parse_args()
    print("Command Line Args:", args)
    launch(
        main,
        args.num_gpus,
        num_machines=args.num_machines,
        machine_rank=args.machine_rank,
        dist_url=args.dist_url,
        args=(args,),
    )
