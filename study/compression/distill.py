"""Knowledge distillation (Hinton et al. 2015): a small student learns from a large teacher's
softened outputs as well as from the hard labels.

    loss = alpha · T² · KL(softmax(teacher / T) ‖ softmax(student / T)) + (1 − alpha) · CE(labels, student)

The teacher is frozen: its logits on the training set are computed once, before training, and fed
to the student alongside the labels, so the teacher's weights cannot change. The T² factor keeps
the soft term's gradients on the scale of the hard term's (Hinton et al., section 2).
"""

from __future__ import annotations

import numpy as np

from study.keras_compat import keras, tf


class Distiller(keras.Model):
    """Trains `student` on (x, (labels, teacher_logits)); evaluates it on plain labels.

    Compile it like the student (its metrics then see the student's logits and the hard labels),
    so per-epoch curves keep their usual names.
    """

    def __init__(self, student: keras.Model, temperature: float, alpha: float):
        super().__init__()
        self.student = student
        self.temperature = float(temperature)
        self.alpha = float(alpha)

    def call(self, inputs, training=False):
        return self.student(inputs, training=training)

    def distillation_loss(self, labels, teacher_logits, student_logits):
        t = self.temperature
        soft_teacher = tf.nn.softmax(teacher_logits / t)
        log_soft_student = tf.nn.log_softmax(student_logits / t)
        kl = tf.reduce_sum(soft_teacher * (tf.math.log(soft_teacher + 1e-12) - log_soft_student), axis=-1)
        hard = keras.losses.sparse_categorical_crossentropy(labels, student_logits, from_logits=True)
        return self.alpha * (t**2) * tf.reduce_mean(kl) + (1.0 - self.alpha) * tf.reduce_mean(hard)

    def train_step(self, data):
        x, (labels, teacher_logits) = data
        with tf.GradientTape() as tape:
            logits = self.student(x, training=True)
            loss = self.distillation_loss(labels, teacher_logits, logits) + tf.add_n(self.student.losses or [0.0])
        gradients = tape.gradient(loss, self.student.trainable_variables)
        self.optimizer.apply_gradients(zip(gradients, self.student.trainable_variables))
        self.compiled_metrics.update_state(labels, logits)
        return {"loss": loss, **{m.name: m.result() for m in self.metrics if m.name != "loss"}}

    def test_step(self, data):
        x, labels = data[0], data[1]
        if isinstance(labels, (tuple, list)):
            labels = labels[0]
        logits = self.student(x, training=False)
        loss = keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True)
        self.compiled_metrics.update_state(labels, logits)
        return {"loss": tf.reduce_mean(loss), **{m.name: m.result() for m in self.metrics if m.name != "loss"}}


def teacher_targets(teacher: keras.Model, x: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(labels, teacher logits) for the student's training set; the teacher runs in inference mode."""
    from study.training import predict

    return labels, predict(teacher, x).astype(np.float32)
