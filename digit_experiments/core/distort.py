"""Elastic distortions of training images (Simard, Steinkraus & Platt, 2003): every pixel
moves by a random displacement field, smoothed by a Gaussian of width `sigma` and
scaled by `alpha` pixels, the picture resampled bilinearly (background outside).

Applied to batches in the tf.data pipeline (core.pipeline), not as a layer of the model:
Keras' own RandomElasticTransform draws one field for both axes and cannot take a batch
of unknown size, and a custom layer would make every saved model (the .h5 checkpoint,
the logged model) need this project to load. Outside the model, the model stays plain.
"""

from __future__ import annotations

import math


def gaussian_kernel(sigma: float):
    """A normalised 1-D Gaussian of radius 3 sigma, as a float32 tensor."""
    import tensorflow as tf

    radius = max(1, math.ceil(3 * sigma))
    x = tf.range(-radius, radius + 1, dtype=tf.float32)
    kernel = tf.exp(-(x**2) / (2.0 * sigma**2))
    return kernel / tf.reduce_sum(kernel)


def displacement(batch: int, height: int, width: int, alpha: float, sigma: float, seed=None):
    """(batch, height, width, 2) pixel offsets (dy, dx): uniform noise in [-1, 1],
    smoothed along each axis by the Gaussian, times alpha."""
    import tensorflow as tf

    noise = tf.random.uniform((batch, height, width, 2), -1.0, 1.0, seed=seed)
    kernel = gaussian_kernel(sigma)
    size = int(kernel.shape[0])
    # A separable blur, each of the two channels (dy, dx) on its own (depthwise).
    rows = tf.tile(tf.reshape(kernel, (size, 1, 1, 1)), (1, 1, 2, 1))
    cols = tf.tile(tf.reshape(kernel, (1, size, 1, 1)), (1, 1, 2, 1))
    smooth = tf.nn.depthwise_conv2d(noise, rows, (1, 1, 1, 1), "SAME")
    smooth = tf.nn.depthwise_conv2d(smooth, cols, (1, 1, 1, 1), "SAME")
    return alpha * smooth


def elastic(images, alpha: float, sigma: float, seed=None):
    """`images` (batch, height, width, channels), each distorted by a field of its own."""
    import tensorflow as tf

    shape = tf.shape(images)
    batch, height, width = shape[0], shape[1], shape[2]
    offsets = displacement(batch, height, width, alpha, sigma, seed)
    grid_y, grid_x = tf.meshgrid(
        tf.range(height, dtype=tf.float32), tf.range(width, dtype=tf.float32), indexing="ij"
    )
    y = grid_y[None] + offsets[..., 0]
    x = grid_x[None] + offsets[..., 1]
    y0, x0 = tf.floor(y), tf.floor(x)
    wy, wx = (y - y0)[..., None], (x - x0)[..., None]
    y0, x0 = tf.cast(y0, tf.int32), tf.cast(x0, tf.int32)
    flat = tf.reshape(images, (-1, shape[3]))
    first = tf.range(batch)[:, None, None] * height * width  # each image's first pixel

    def pixel(yy, xx):
        """The pixels at integer (yy, xx); 0 (background) outside the picture."""
        inside = (yy >= 0) & (yy < height) & (xx >= 0) & (xx < width)
        index = first + tf.clip_by_value(yy, 0, height - 1) * width
        index += tf.clip_by_value(xx, 0, width - 1)
        return tf.where(inside[..., None], tf.gather(flat, index), tf.zeros_like(wy))

    top = pixel(y0, x0) * (1 - wx) + pixel(y0, x0 + 1) * wx
    bottom = pixel(y0 + 1, x0) * (1 - wx) + pixel(y0 + 1, x0 + 1) * wx
    return tf.cast(top * (1 - wy) + bottom * wy, images.dtype)
