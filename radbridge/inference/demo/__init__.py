"""Demonstration models: synthetic studies, a small numpy network, its ONNX export and a
validation report.

No weights can be downloaded where Radbridge is built, so these models are trained here on
synthetic DICOM that has the modality, geometry and form of the real thing. They exist to
exercise the real pipeline (routing, preprocessing, inference, findings, results) and are
labelled as demonstration models on every output; they say nothing about patients.
"""
