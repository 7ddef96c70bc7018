"""torchvision detectors (Faster R-CNN) compressed with the same parts: see :mod:`yolo_ldac.tv.adapter`."""
