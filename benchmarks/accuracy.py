"""float32 error of each convolution algorithm against float64, per pass (docs/algorithms.md).

    python -m benchmarks.accuracy [--layers mnist_c2,resnet_c2,resnet_c4,vgg_c3]
                                  [--algorithms im2col,winograd2,winograd4]

For each suite layer: standard-normal x and dy, He-scaled weights (N(0, 2 / (C R S))), the
layer's own stride and padding. The error of a float32 result is max|out32 - out64| / max|out64|,
out64 being im2col in float64 on the same (float32-representable) inputs. Prints a Markdown table.
"""
import argparse

import numpy as np

from fastconv import _cli, functional as F
from fastconv._dispatch import ALGORITHMS

from .suite import CONV_LAYERS

PASSES = ("forward", "backward-data", "backward-weights")


def _passes(case, x, w, dy, algorithm):
    stride, padding, kw = (case.stride, case.stride), (case.pad, case.pad), case.conv_kwargs
    return (F.conv2d(x, w, None, stride, padding, algorithm=algorithm, **kw),
            F.conv2d_backward_data(dy, x.shape, w, stride, padding, algorithm=algorithm, **kw),
            F.conv2d_backward_weights(dy, x, w.shape, stride, padding, algorithm=algorithm, **kw))


def relative_errors(case, algorithm, seed=0):
    rng = np.random.default_rng(seed)
    k, cg, r, _ = case.w_shape
    x = rng.standard_normal(case.x_shape).astype(np.float32)
    w = (rng.standard_normal(case.w_shape) * np.sqrt(2.0 / (cg * r * r))).astype(np.float32)
    dy = rng.standard_normal(case.y_shape).astype(np.float32)
    exact = _passes(case, x.astype(np.float64), w.astype(np.float64), dy.astype(np.float64),
                    "im2col")
    approx = _passes(case, x, w, dy, algorithm)
    return [float(np.abs(a - e).max() / np.abs(e).max()) for a, e in zip(approx, exact)]


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.accuracy",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--layers", type=_cli.names, default="mnist_c2,resnet_c2,resnet_c4,vgg_c3")
    parser.add_argument("--algorithms", type=_cli.names, default="im2col,winograd2,winograd4")
    args = parser.parse_args(argv)
    layers = {case.name: case for case in CONV_LAYERS}
    for option, given, known in (("layers", args.layers, layers), ("algorithms", args.algorithms,
                                                                    ALGORITHMS)):
        unknown = [name for name in given if name not in known]
        if unknown:
            parser.error(f"argument --{option}: unknown {', '.join(unknown)}; known: "
                         f"{', '.join(known)}")
    print("| layer (N, C, H, W, K) | algorithm | " + " | ".join(PASSES) + " |")
    print("| --- | --- | " + " | ".join("---" for _ in PASSES) + " |")
    for name in args.layers:
        case = layers[name]
        for i, algorithm in enumerate(args.algorithms):
            label = f"{name} ({case.n}, {case.c}, {case.h}, {case.w}, {case.k})" if i == 0 else name
            errors = relative_errors(case, algorithm)
            print(f"| {label} | {algorithm} | " + " | ".join(f"{e:.1e}" for e in errors) + " |",
                  flush=True)


if __name__ == "__main__":
    main()
