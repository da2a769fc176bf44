"""fastconv: fast CPU 2-D convolution and pooling, forward and backward, with a NumPy reference."""
from . import functional, reference
from ._dispatch import autotune
from ._sysinfo import show_config
from .config import (get_workspace_limit, release_scratch, set_winograd_enabled,
                     set_workspace_limit)
from .functional import (avg_pool2d, avg_pool2d_backward, batch_norm2d, batch_norm2d_backward,
                         batch_norm2d_inference, bias_backward, conv2d, conv2d_backward,
                         conv2d_backward_data, conv2d_backward_weights, l2_pool2d,
                         l2_pool2d_backward, linear, linear_backward, max_pool2d,
                         max_pool2d_backward, relu, relu_backward, relu_max_pool2d,
                         relu_max_pool2d_backward, softmax_cross_entropy)
from .threads import get_num_threads, openmp_enabled, set_num_threads
from . import datasets, nn  # the layer API and the Fashion-MNIST loader

__version__ = "0.1.0"

__all__ = [
    "conv2d", "conv2d_backward", "conv2d_backward_data", "conv2d_backward_weights", "bias_backward",
    "max_pool2d", "max_pool2d_backward", "avg_pool2d", "avg_pool2d_backward",
    "l2_pool2d", "l2_pool2d_backward", "relu_max_pool2d", "relu_max_pool2d_backward",
    "relu", "relu_backward", "linear", "linear_backward",
    "batch_norm2d", "batch_norm2d_inference", "batch_norm2d_backward",
    "softmax_cross_entropy", "set_num_threads", "get_num_threads", "openmp_enabled",
    "autotune", "show_config", "set_workspace_limit", "get_workspace_limit", "release_scratch",
    "set_winograd_enabled",
    "functional", "reference", "nn", "datasets",
]
