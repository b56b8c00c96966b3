"""Offline mAP evaluation: COCO metrics on a proven engine, PASCAL VOC metrics in numpy.

Readers turn every supported file format into the same in-memory COCO structures
(structures.py); coco.py hands them to hotcoco / faster-coco-eval / pycocotools, voc.py
computes the VOC numbers itself; report.py and plots.py present the results; run_model.py
produces predictions by running a model through the daemon's own ``Detector``. Nothing
here imports torch or ultralytics.
"""
