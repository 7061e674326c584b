"""Weight clustering (weight sharing): each layer's weights take one of `clusters` values, fitted by
k-means++ and fine-tuned, then the wrappers are stripped. The float file keeps its size; what
shrinks is the compressed size, since few distinct values compress well (see artifact/gzip_bytes).
"""

from __future__ import annotations

from study.compression.layers import KERNELS, fresh_copy
from study.keras_compat import keras, tfmot


def clusterable_copy(model: keras.Model, clusters: int) -> keras.Model:
    """A copy of `model` whose Dense and conv kernels are clustered during fine-tuning."""
    clustering = tfmot().clustering.keras
    init = clustering.CentroidInitialization.KMEANS_PLUS_PLUS

    def wrap(layer):
        kernel = next((w for w in layer.weights if "kernel" in w.name), None)
        if type(layer).__name__ not in KERNELS or kernel is None or kernel.shape.num_elements() <= clusters:
            return layer  # a kernel with no more weights than clusters has nothing to share
        return clustering.cluster_weights(layer, number_of_clusters=clusters, cluster_centroids_init=init)

    return keras.models.clone_model(fresh_copy(model), clone_function=wrap)


def strip(model: keras.Model) -> keras.Model:
    return tfmot().clustering.keras.strip_clustering(model)
