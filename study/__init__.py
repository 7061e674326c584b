"""study: sweep studies of overfitting, underfitting and model compression.

A sweep file (sweeps/*.yaml) becomes an Optuna study whose trials train Keras models and log to
MLflow; `study report` turns the runs into HTML charts. Data flows one way:
sweep file -> config -> trials -> MLflow runs -> report tables -> charts -> HTML.
"""

__version__ = "0.1.0"
