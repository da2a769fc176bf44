"""Seconds per training epoch on Fashion-MNIST: fastconv against PyTorch, alternating.

    python -m benchmarks.epoch [--model cnn|resnet] [--pairs 3] [--threads 2] [--subset N]

Each pair trains one epoch of the same network, batch 64, Adam 1e-3, shuffled, first with
`fastconv.nn.Sequential.fit` and then with `torch.nn` + `torch.optim.Adam` (a plain loop over the
same shuffled batches), at the same thread count. The networks: `cnn` (`fastconv.train.cnn`: conv
1->32 and 32->64, 3x3, ReLU, 2x2 max-pool, dense 3136->128->10) and `resnet`
(`fastconv.train.resnet`: a conv-BN-ReLU stem, three stages of one residual block each, 16-32-64
channels, projection shortcuts, global average pooling, dense 64->10; PyTorch's twin uses its
BatchNorm2d (the same momentum and eps) and convolutions with biases, as ours). Test evaluation is not timed. Both sides drift
by 15-20 % from run to run on a shared machine, so the pairs alternate and each pair's ratio is
reported, with the medians.
"""
import argparse
import statistics
import time

import numpy as np

import fastconv
from fastconv import _cli, nn
from fastconv.datasets import load_fashion_mnist
from fastconv.train import MODELS


def fastconv_epoch(name, x, y, seed, batch_size):
    model = MODELS[name](rng=seed)
    history = model.fit(x, y, epochs=1, batch_size=batch_size, optimizer=nn.Adam(1e-3),
                        seed=seed, verbose=False)
    return history["seconds"][0], history["loss"][0]


def torch_cnn(torch):
    tnn = torch.nn
    return tnn.Sequential(
        tnn.Conv2d(1, 32, 3, padding=1), tnn.ReLU(), tnn.MaxPool2d(2),
        tnn.Conv2d(32, 64, 3, padding=1), tnn.ReLU(), tnn.MaxPool2d(2),
        tnn.Flatten(), tnn.Linear(3136, 128), tnn.ReLU(), tnn.Linear(128, 10))


def torch_resnet(torch, widths=(16, 32, 64)):
    """fastconv.train.resnet's twin (one block per stage)."""
    tnn = torch.nn

    class Block(tnn.Module):
        def __init__(self, c_in, c_out, stride):
            super().__init__()
            self.body = tnn.Sequential(
                tnn.Conv2d(c_in, c_out, 3, stride, 1), tnn.BatchNorm2d(c_out), tnn.ReLU(),
                tnn.Conv2d(c_out, c_out, 3, 1, 1), tnn.BatchNorm2d(c_out))
            self.shortcut = tnn.Identity() if stride == 1 and c_in == c_out else \
                tnn.Sequential(tnn.Conv2d(c_in, c_out, 1, stride), tnn.BatchNorm2d(c_out))

        def forward(self, x):
            return torch.relu(self.body(x) + self.shortcut(x))

    layers = [tnn.Conv2d(1, widths[0], 3, padding=1), tnn.BatchNorm2d(widths[0]), tnn.ReLU()]
    c_in = widths[0]
    for stage, width in enumerate(widths):
        layers.append(Block(c_in, width, 2 if stage else 1))
        c_in = width
    layers += [tnn.AdaptiveAvgPool2d(1), tnn.Flatten(), tnn.Linear(c_in, 10)]
    return tnn.Sequential(*layers)


TORCH_MODELS = {"cnn": torch_cnn, "resnet": torch_resnet}


def torch_epoch(torch, name, x, y, seed, batch_size):
    tnn = torch.nn
    torch.manual_seed(seed)
    model = TORCH_MODELS[name](torch)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    criterion = tnn.CrossEntropyLoss()
    xt, yt = torch.from_numpy(x), torch.from_numpy(y.astype(np.int64))
    order = torch.from_numpy(np.random.default_rng(seed).permutation(len(x)))
    total = 0.0
    start = time.perf_counter()
    for i in range(0, len(x), batch_size):
        idx = order[i:i + batch_size]
        optimizer.zero_grad(set_to_none=True)
        loss = criterion(model(xt[idx]), yt[idx])
        loss.backward()
        optimizer.step()
        total += loss.item() * len(idx)
    return time.perf_counter() - start, total / len(x)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.epoch", description=__doc__.split("\n")[0])
    parser.add_argument("--model", choices=sorted(TORCH_MODELS), default="cnn")
    parser.add_argument("--pairs", type=_cli.positive_int, default=3)
    parser.add_argument("--threads", type=_cli.threads, default=None, help="default: all cores")
    parser.add_argument("--subset", type=_cli.positive_int, default=None,
                        help="first N training images")
    parser.add_argument("--batch-size", type=_cli.positive_int, default=64)
    args = parser.parse_args(argv)
    import torch  # the [bench] extra

    threads = args.threads or fastconv.get_num_threads()
    fastconv.set_num_threads(threads)
    torch.set_num_threads(threads)
    (x, y), _ = load_fashion_mnist()
    if args.subset:
        x, y = x[:args.subset], y[:args.subset]
    print(f"{args.model}: {len(x)} images, batch {args.batch_size}, {threads} thread(s), "
          f"fastconv {fastconv.__version__}, torch {torch.__version__}")
    rows = []
    for pair in range(1, args.pairs + 1):
        fc_s, fc_loss = fastconv_epoch(args.model, x, y, pair, args.batch_size)
        th_s, th_loss = torch_epoch(torch, args.model, x, y, pair, args.batch_size)
        rows.append((fc_s, th_s))
        print(f"pair {pair}: fastconv {fc_s:6.2f} s (loss {fc_loss:.4f})   "
              f"torch {th_s:6.2f} s (loss {th_loss:.4f})   torch/fastconv {th_s / fc_s:.2f}x",
              flush=True)
    fc_med = statistics.median(r[0] for r in rows)
    th_med = statistics.median(r[1] for r in rows)
    ratio_med = statistics.median(r[1] / r[0] for r in rows)
    print(f"median: fastconv {fc_med:.2f} s/epoch, torch {th_med:.2f} s/epoch, "
          f"median ratio {ratio_med:.2f}x")


if __name__ == "__main__":
    main()
