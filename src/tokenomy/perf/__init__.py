"""Performance model: step time, capacity, throughput at an SLO and power of LLM inference.

Operator-level roofline calibrated on a measured GPU profile (perf/profiles/<name>/); pure
functions over catalog types. See step.py for the model and fit.py for the calibration.
"""

from .calibration import Calibration, load_calibration
from .predict import (
    StepPrediction,
    batch_at_tpot,
    batch_capacity,
    decode_prediction,
    max_batch_size,
    predict_decode_step,
    predict_prefill,
    prefill_prediction,
    throughput_at_tpot,
)
from .shapes import kv_bytes_per_token
from .step import StepModel, make_step_model, min_devices

__all__ = [
    "Calibration", "StepModel", "StepPrediction", "batch_at_tpot", "batch_capacity", "decode_prediction",
    "kv_bytes_per_token", "load_calibration", "make_step_model", "max_batch_size", "min_devices",
    "predict_decode_step", "predict_prefill", "prefill_prediction", "throughput_at_tpot",
]
