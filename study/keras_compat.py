"""The one place that imports TensorFlow, Keras 2 and the Model Optimization Toolkit.

tensorflow-model-optimization works only with Keras 2 (the `tf_keras` package), and TensorFlow
picks its Keras when it is first imported, so `TF_USE_LEGACY_KERAS` must be set before that
import. Every other module imports `tf`, `keras` and `tfmot` from here, never directly.

`STUDY_TF_THREADS` caps TensorFlow's thread pools; the sweep runner sets it for each worker
process so that N workers on N cores do not fight over them.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile

if "tensorflow" in sys.modules and os.environ.get("TF_USE_LEGACY_KERAS") != "1":
    raise ImportError(
        "TensorFlow was imported before study.keras_compat; import study.keras_compat first "
        "(or set TF_USE_LEGACY_KERAS=1) so that Keras 2 is used"
    )

os.environ["TF_USE_LEGACY_KERAS"] = "1"
# Level 3 hides the "failed call to cuInit" error every CPU-only machine prints; real failures
# still surface as Python exceptions. Set TF_CPP_MIN_LOG_LEVEL=0 to see everything.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


@contextlib.contextmanager
def quiet_stderr():
    """Capture file descriptor 2 (C++ libraries write there past Python's logging); replay what
    was captured only if the block fails, so nothing useful is lost."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        except BaseException:
            os.dup2(saved, 2)
            captured.seek(0)
            sys.stderr.write(captured.read().decode(errors="replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def _import_quietly():
    """TensorFlow's C++ start-up lines ignore the log level: import it with stderr captured."""
    with quiet_stderr():
        import tensorflow
        import tf_keras
    return tensorflow, tf_keras


tf, keras = _import_quietly()

logging.getLogger("tensorflow").setLevel(logging.ERROR)
tf.get_logger().setLevel(logging.ERROR)

_threads = os.environ.get("STUDY_TF_THREADS")
if _threads:
    tf.config.threading.set_intra_op_parallelism_threads(int(_threads))
    tf.config.threading.set_inter_op_parallelism_threads(int(_threads))


def tfmot():
    """Import tensorflow-model-optimization on first use: it adds ~1 s that plain sweeps skip."""
    import tensorflow_model_optimization as module

    return module


__all__ = ["tf", "keras", "tfmot", "quiet_stderr"]
