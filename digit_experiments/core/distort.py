"""Elastic distortions of training images (Simard, Steinkraus & Platt, 2003): every pixel
moves by a random displacement field, smoothed by a Gaussian of width `sigma` and
scaled by `alpha` pixels, the picture resampled bilinearly (background outside); and
rotation, shift and zoom as one affine transform (regularization.augment.single_transform),
in the same single resampling when both are on. Keras' RandomRotation, RandomTranslation
and RandomZoom resample a picture once each, and every bilinear resampling blurs it.

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


def pixel_grid(height, width):
    """(y, x): every pixel's row and column, each (height, width), as float32."""
    import tensorflow as tf

    return tf.meshgrid(
        tf.range(height, dtype=tf.float32), tf.range(width, dtype=tf.float32), indexing="ij"
    )


def affine(batch, height: int, width: int, rotation: float, shift: float, zoom: float, seed=None):
    """(y, x), each (batch, height, width): where every output pixel of each picture is
    read from, for a random rotation by up to `rotation` degrees either way, a scale by
    1 +- `zoom` and a shift by up to `shift` of the picture's size on each axis (one
    draw of each per picture)."""
    import tensorflow as tf

    # One call for the four draws: ops in a graph that share an op seed repeat a sequence.
    draws = tf.random.uniform((batch, 4), -1.0, 1.0, seed=seed)
    return affine_coordinates(
        height,
        width,
        angle=draws[:, 0] * (rotation * math.pi / 180.0),
        scale=1.0 + draws[:, 1] * zoom,
        shift_y=draws[:, 2] * shift * tf.cast(height, tf.float32),
        shift_x=draws[:, 3] * shift * tf.cast(width, tf.float32),
    )


def affine_coordinates(height: int, width: int, angle, scale, shift_y, shift_x):
    """(y, x) as in `affine` for given per-picture values: rotate by `angle` (radians),
    scale by `scale`, both about the centre, then shift by (`shift_y`, `shift_x`) pixels."""
    import tensorflow as tf

    centre_y = (tf.cast(height, tf.float32) - 1.0) / 2.0
    centre_x = (tf.cast(width, tf.float32) - 1.0) / 2.0
    grid_y, grid_x = pixel_grid(height, width)

    def per_picture(v):
        return tf.cast(v, tf.float32)[:, None, None]

    # The inverse of "rotate, scale, then shift": output point p reads input point
    # c + R(-angle) (p - c - shift) / scale.
    dy = grid_y[None] - centre_y - per_picture(shift_y)
    dx = grid_x[None] - centre_x - per_picture(shift_x)
    cos, sin = per_picture(tf.cos(angle)), per_picture(tf.sin(angle))
    inverse = 1.0 / per_picture(scale)
    y = centre_y + inverse * (cos * dy - sin * dx)
    x = centre_x + inverse * (sin * dy + cos * dx)
    return y, x


def transform(
    images,
    rotation: float = 0.0,
    shift: float = 0.0,
    zoom: float = 0.0,
    alpha: float = 0.0,
    sigma: float = 4.0,
    seed=None,
):
    """`images` (batch, height, width, channels), each moved by a random affine transform
    (rotation, shift, zoom; see `affine`) and bent by an elastic field (alpha, sigma) of
    its own, whichever are not 0, and resampled once."""
    import tensorflow as tf

    shape = tf.shape(images)
    batch, height, width = shape[0], shape[1], shape[2]
    if rotation or shift or zoom:
        y, x = affine(batch, height, width, rotation, shift, zoom, seed)
    else:
        grid_y, grid_x = pixel_grid(height, width)
        y, x = grid_y[None], grid_x[None]
    if alpha:
        offsets = displacement(batch, height, width, alpha, sigma, seed)
        y, x = y + offsets[..., 0], x + offsets[..., 1]
    return bilinear(images, y, x)


def elastic(images, alpha: float, sigma: float, seed=None):
    """`images` (batch, height, width, channels), each distorted by a field of its own."""
    return transform(images, alpha=alpha, sigma=sigma, seed=seed)


def bilinear(images, y, x):
    """`images` read at the (batch, height, width) coordinates y, x, bilinearly; 0
    (background) outside the picture."""
    import tensorflow as tf

    shape = tf.shape(images)
    batch, height, width = shape[0], shape[1], shape[2]
    y = tf.broadcast_to(y, (batch, height, width))
    x = tf.broadcast_to(x, (batch, height, width))
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
