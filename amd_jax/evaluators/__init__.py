"""Evaluation of a fine-tuned model, in big_vision's shape: an evaluator is built from a
predict function and where its data lies, and `run(state)` yields (name, value)
pairs; amd_jax/train.py writes them (the metrics row, and after a test the test
files). amd_jax/tasks.py says which evaluators a task has.

common.py          the shared part: the jitted predict function, a split's batches
classification.py  top-k, per-class accuracy, confusion, multi-view scores; its Evaluator
ava.py             the AVA detector's Evaluator (frame mAP of a split)
ava_map.py         AVA frame mAP@0.5, the official evaluation in numpy

A yielded value that is a number goes into the metrics row; the others (per-class
results, per-video scores) are per-example outputs for the test files.
"""
