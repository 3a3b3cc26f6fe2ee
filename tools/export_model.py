#!/usr/bin/env python
"""
Export a trained defect_det model to TorchScript or ONNX for deployment (defect_det/export/), after Detectron2's
tools/deploy/export_model.py, and check the file against the eager model at the tracing size and two others:

    python tools/export_model.py --config-file configs/RDDN/synthetic/faster_rcnn_R18_FPN_pre_align_pt.yaml \\
        --format torchscript --export-method tracing --output output/export \\
        --sample-image img.jpg --sample-template template_img.jpg --run-eval MODEL.WEIGHTS output/demo/model_final.pth

Writes model.ts (or model.onnx) and export_info.json (inputs, outputs, test-time resize). Every R-CNN of
defect_det (GeneralizedRCNN / TemplateRCNN in every mode, TR-Post, Cascade, box-supervised masks) exports by
tracing; SegDecNet by tracing or scripting. Refused with the reason: Sinkhorn NMS (not supported yet),
Soft-NMS / WBF, scripting an R-CNN, ONNX without the onnx package. --run-eval scores the exported and the
eager model on DATASETS.TEST[0] (or --eval-dataset) with our evaluator.
"""
from defect_det.export.cli import main

if __name__ == "__main__":
    main(description=__doc__)
