"""study: sweep studies of overfitting, underfitting and model compression.

A sweep file (sweeps/*.yaml) becomes an Optuna study whose trials train Keras models and log to
MLflow; `study report` turns the runs into HTML charts. Data flows one way:
sweep file -> config -> trials -> MLflow runs -> report tables -> charts -> HTML.

`study.results("demo")` returns a sweep's trials as a pandas DataFrame (study/frames.py).
"""

__version__ = "0.1.0"
__all__ = ["results"]


def __getattr__(name: str):
    """`study.results`, imported when first used: `import study` stays light for every module."""
    if name == "results":
        from study.frames import results

        return results
    raise AttributeError(f"module 'study' has no attribute {name!r}")
