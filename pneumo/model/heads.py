"""Several linear heads as one: the mean of their logits, folded into a single BN -> Dense(1).

Why: with 2,048 inputs (`--pooling lung-zones`) one head's specificity on new children moves with its seed
(0.759-0.793 on shift_dev over three seeds; docs/decisions.md). The mean logit of a few heads
is stable, and because a linear head is an affine map of log1p(features), the mean is one too: the bundle still
holds one log1p -> BN -> Dense(1) head, and serving costs nothing more.
"""

from __future__ import annotations

import numpy as np

from .backends import affine_bn


def folded_logit_weights(heads) -> tuple[np.ndarray, np.ndarray, float]:
    """(the first head's BN weights, Dense kernel (d, 1), bias) whose logit is the heads' mean logit.

    Head k: logit_k = w_k . (s_k * u + t_k) + b_k with u = log1p(x) and (s_k, t_k) its BN as an affine map.
    Their mean is A . u + C; written over the first head's BN output z = s_0 * u + t_0 it is
    (A / s_0) . z + C - (A / s_0) . t_0."""
    scale_sum, bias_sum = 0.0, 0.0
    for head in heads:
        scale, shift = affine_bn(head.get_layer("head_bn1"))
        kernel, bias = (w.astype(np.float64) for w in head.get_layer("logit").get_weights())
        scale_sum = scale_sum + kernel[:, 0] * scale
        bias_sum += float(kernel[:, 0] @ shift + bias[0])
    mean_scale, mean_bias = scale_sum / len(heads), bias_sum / len(heads)
    scale0, shift0 = affine_bn(heads[0].get_layer("head_bn1"))
    if np.abs(scale0).min() < 1e-12:
        raise ValueError("the first head's BatchNorm zeroes a feature; its heads cannot be folded into it.")
    kernel = mean_scale / scale0
    return heads[0].get_layer("head_bn1").get_weights(), kernel[:, None], mean_bias - float(kernel @ shift0)


def fold_into(target, heads) -> None:
    """Give `target` (a linear head like the others) the heads' mean logit."""
    bn_weights, kernel, bias = folded_logit_weights(heads)
    target.get_layer("head_bn1").set_weights(bn_weights)
    target.get_layer("logit").set_weights([kernel.astype(np.float32), np.array([bias], np.float32)])
