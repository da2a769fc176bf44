"""Train a CNN on Fashion-MNIST: ``python -m fastconv.train [--model cnn|lenet5|resnet] [options]``.

Prints a progress bar per epoch and train/test metrics after each, then writes to --out: the
model (model.npz, reloadable with ``fastconv.nn.Sequential.load``), metrics.json and PNG
pictures (learning curves, first-layer filters, first-layer feature maps of one test image).
Ctrl-C stops cleanly: the model of the last complete epoch is still saved.
"""
import argparse
import json
import math
import os
import platform
import sys
import time

import numpy as np

from . import __version__, _cli, get_num_threads, set_num_threads
from .threads import usable_cores
from ._dispatch import ALGORITHMS
from ._files import atomic_write
from .checkpoint import load_augment_rng, load_checkpoint, save_checkpoint
from .datasets import CLASS_NAMES, load_fashion_mnist, random_shift_flip
from .nn import (SGD, Adam, BatchNorm2D, Conv2D, Dense, Flatten, GlobalAvgPool2D, MaxPool2D,
                 ReLU, Residual, Sequential, augmentation_rng, make_rng)
from .nn.layers import _BatchNorm
from .nn.model import _leaf_layers


def cnn(rng=None, algorithm="auto"):
    """conv(1->32, 3x3, p1)-ReLU-maxpool2-conv(32->64, 3x3, p1)-ReLU-maxpool2-dense(3136->128)-
    ReLU-dense(128->10): 421,642 parameters."""
    rng = make_rng(rng)
    return Sequential([
        Conv2D(1, 32, 3, padding=1, algorithm=algorithm, seed=rng), ReLU(), MaxPool2D(2),
        Conv2D(32, 64, 3, padding=1, algorithm=algorithm, seed=rng), ReLU(), MaxPool2D(2),
        Flatten(), Dense(64 * 7 * 7, 128, seed=rng), ReLU(), Dense(128, 10, seed=rng),
    ])


def lenet5(rng=None, algorithm="auto"):
    """LeNet-5 for 28x28 inputs (padding 2 on the first conv, as in the original's 32x32), with
    the modern ReLU and max pooling instead of tanh and subsampling: 61,706 parameters."""
    rng = make_rng(rng)
    return Sequential([
        Conv2D(1, 6, 5, padding=2, algorithm=algorithm, seed=rng), ReLU(), MaxPool2D(2),
        Conv2D(6, 16, 5, algorithm=algorithm, seed=rng), ReLU(), MaxPool2D(2),
        Flatten(), Dense(16 * 5 * 5, 120, seed=rng), ReLU(), Dense(120, 84, seed=rng), ReLU(),
        Dense(84, 10, seed=rng),
    ])


def _residual_block(c_in, c_out, stride, algorithm, rng, sync_bn):
    """conv3x3(stride)-BN-ReLU-conv3x3-BN, added to x (or to a 1x1 strided projection + BN of x
    when the shape changes); the ReLU after the sum is the caller's."""
    body = [Conv2D(c_in, c_out, 3, stride, 1, algorithm=algorithm, seed=rng),
            BatchNorm2D(c_out, sync=sync_bn), ReLU(),
            Conv2D(c_out, c_out, 3, 1, 1, algorithm=algorithm, seed=rng),
            BatchNorm2D(c_out, sync=sync_bn)]
    shortcut = None
    if stride != 1 or c_in != c_out:
        shortcut = [Conv2D(c_in, c_out, 1, stride, algorithm=algorithm, seed=rng),
                    BatchNorm2D(c_out, sync=sync_bn)]
    return Residual(body, shortcut)


def resnet(rng=None, algorithm="auto", widths=(16, 32, 64), blocks=1, sync_bn=False):
    """A small ResNet (He et al., 2016, the CIFAR variant) for 28x28 inputs: conv3x3(1->16)-BN-
    ReLU, three stages of `blocks` residual blocks (16, 32, 64 channels at 28x28, 14x14 and 7x7;
    each later stage starts with a stride-2 block and a projection shortcut), global average
    pooling and dense(64->10). sync_bn: batch norms with the statistics of the whole global
    batch under MPI (nn.BatchNorm2D's sync)."""
    rng = make_rng(rng)
    layers = [Conv2D(1, widths[0], 3, padding=1, algorithm=algorithm, seed=rng),
              BatchNorm2D(widths[0], sync=sync_bn), ReLU()]
    c_in = widths[0]
    for stage, width in enumerate(widths):
        for i in range(blocks):
            stride = 2 if stage > 0 and i == 0 else 1
            layers += [_residual_block(c_in, width, stride, algorithm, rng, sync_bn), ReLU()]
            c_in = width
    layers += [GlobalAvgPool2D(), Dense(c_in, 10, seed=rng)]
    return Sequential(layers)


MODELS = {"cnn": cnn, "lenet5": lenet5, "resnet": resnet}
MODELS_WITH_BATCH_NORM = ("resnet",)

#: Each model's training recipe: the defaults of the options it leaves unset (docs/training.md
#: has the runs behind them). The ResNet trains with the usual ResNet recipe: SGD with Nesterov
#: momentum, weight decay, shifted and mirrored images, more epochs.
RECIPES = {
    "cnn": {"epochs": 8, "optimizer": "adam", "weight_decay": 0.0, "augment": "none"},
    "lenet5": {"epochs": 8, "optimizer": "adam", "weight_decay": 0.0, "augment": "none"},
    "resnet": {"epochs": 30, "optimizer": "sgd", "weight_decay": 5e-4, "augment": "shift-flip"},
}


#: The files a run writes into --out.
OUTPUTS = ("model.npz", "metrics.json", "checkpoint.npz", "curves.png", "filters.png",
           "feature_maps.png")


def _seed(text):
    return _cli.integer(text, 0, "an integer >= 0")


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m fastconv.train", description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", choices=sorted(MODELS), default="cnn")
    p.add_argument("--epochs", type=_cli.positive_int, default=None,
                   help="passes over the training set (default: the model's recipe: 8, resnet 30)")
    p.add_argument("--batch-size", type=_cli.positive_int, default=64)
    p.add_argument("--optimizer", choices=["adam", "sgd"], default=None,
                   help="default: the model's recipe (adam; resnet: sgd)")
    p.add_argument("--lr", type=lambda t: _cli.number(t, 0, low_open=True), default=None,
                   help="learning rate (default: 1e-3 for adam, 0.05 for sgd)")
    p.add_argument("--lr-schedule", choices=["cosine", "none"], default="cosine",
                   help="cosine: the rate falls from --lr towards 0 over the epochs")
    p.add_argument("--momentum", type=lambda t: _cli.number(t, 0, 1), default=0.9,
                   help="SGD momentum (Nesterov), in [0, 1)")
    p.add_argument("--weight-decay", type=lambda t: _cli.number(t, 0), default=None,
                   help="L2 on the weights (default: the model's recipe: 0; resnet 5e-4)")
    p.add_argument("--augment", choices=["none", "shift-flip"], default=None,
                   help="shift-flip: each training image moved by up to 2 pixels and mirrored "
                        "half the time (default: the model's recipe: none; resnet shift-flip)")
    p.add_argument("--algorithm", default="auto", choices=ALGORITHMS,
                   help="convolution algorithm for every conv layer")
    p.add_argument("--threads", type=_cli.threads, default=None,
                   help="threads for fastconv's kernels and BLAS (default: all cores)")
    p.add_argument("--seed", type=_seed, default=0)
    p.add_argument("--subset", type=_cli.positive_int, default=None,
                   help="use only the first N training and first N test images")
    p.add_argument("--test-subset", type=_cli.positive_int, default=None,
                   help="number of test images (default: --subset, or all)")
    p.add_argument("--data", default=None,
                   help="folder of the idx files (default: $FASTCONV_DATA or "
                        "/usr/share/datasets/fashion-mnist)")
    p.add_argument("--out", default="runs/fashion_mnist", help="output folder")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG pictures")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--checkpoint-every", type=_cli.positive_int, default=None, metavar="N",
                   help="write OUT/checkpoint.npz every N epochs (model, optimiser state, "
                        "epoch, random state, history)")
    p.add_argument("--sync-bn", action="store_true",
                   help="under mpiexec, batch norms use the statistics of the whole global batch "
                        "rather than of each rank's share (resnet)")
    p.add_argument("--resume", default=None, metavar="PATH",
                   help="continue the run a checkpoint was written by (same options)")
    args = p.parse_args(argv)
    for option, value in RECIPES[args.model].items():
        if getattr(args, option) is None:
            setattr(args, option, value)
    # (a folder where a file will go would be found after training, the run lost)
    for name in OUTPUTS:
        problem = _cli.writable_file(os.path.join(args.out, name))
        if problem:
            p.error(problem)
    if args.resume is not None and not os.path.isfile(args.resume):
        p.error(f"argument --resume: {args.resume!r} is not a file")
    if args.sync_bn and args.model not in MODELS_WITH_BATCH_NORM:
        p.error(f"argument --sync-bn: the {args.model} model has no batch norm")
    return args


def make_optimizer(args):
    if args.optimizer == "adam":
        return Adam(lr=args.lr or 1e-3, weight_decay=args.weight_decay)
    return SGD(lr=args.lr or 0.05, momentum=args.momentum, nesterov=args.momentum > 0,
               weight_decay=args.weight_decay)


def cosine_schedule(base_lr, epochs):
    """lr at epoch e: base * (1 + cos(pi * e / epochs)) / 2, from base down towards 0."""
    return lambda epoch: base_lr * 0.5 * (1 + math.cos(math.pi * epoch / epochs))


def _epoch_line(epoch, epochs, h):
    return (f"epoch {epoch + 1}/{epochs}: train loss {h['loss'][-1]:.4f} acc {h['accuracy'][-1]:.4f}"
            f" | test loss {h['val_loss'][-1]:.4f} acc {h['val_accuracy'][-1]:.4f}"
            f" | {h['seconds'][-1]:.1f} s ({h['images_per_s'][-1]:.0f} img/s), lr {h['lr'][-1]:.2e}")


def save_run(model, history, args, out, test, interrupted, log=print):
    """model.npz, metrics.json and (unless --no-plots) the PNG pictures."""
    os.makedirs(out, exist_ok=True)
    model.save(os.path.join(out, "model.npz"))
    done = len(history["loss"])
    metrics = {
        "fastconv_version": __version__, "python": platform.python_version(),
        "args": vars(args), "threads": get_num_threads(), "epochs_completed": done,
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "interrupted": interrupted, "parameters": model.num_params,
        "history": {k: v for k, v in history.items() if isinstance(v, list)},
        "final_test_accuracy": history["val_accuracy"][-1] if done else None,
        "final_test_loss": history["val_loss"][-1] if done else None,
        "mean_seconds_per_epoch": float(np.mean(history["seconds"])) if done else None,
        "classes": list(CLASS_NAMES),
    }
    with atomic_write(os.path.join(out, "metrics.json"), "w", encoding="utf-8") as f:
        json.dump(metrics, f, indent=2)
    written = ["model.npz", "metrics.json"]
    if not args.no_plots:
        try:
            from .nn import plots
            plots.require_matplotlib()
        except ImportError as exc:
            log(f"note: {exc}; skipping the PNG pictures")
        else:
            title = f"{args.model} on Fashion-MNIST ({args.optimizer}, batch {args.batch_size})"
            plots.plot_history(history, os.path.join(out, "curves.png"), title)
            first = next(l for l in model.layers if isinstance(l, Conv2D))
            plots.plot_filters(first.params["w"], os.path.join(out, "filters.png"),
                               f"{first.out_channels} learned first-layer filters")
            image = test[0][:1]
            maps = first.forward(image.astype(model.dtype), training=False)[0]
            plots.plot_feature_maps(image[0], maps, os.path.join(out, "feature_maps.png"),
                                    f"first conv layer on a test image "
                                    f"({CLASS_NAMES[int(test[1][0])]})")
            written += ["curves.png", "filters.png", "feature_maps.png"]
    log(f"wrote {', '.join(written)} to {out}")


def _start_distributed():
    """fastconv.distributed, initialised, when an MPI launcher started this process with more
    than one rank; else None (one process, as before)."""
    from . import distributed

    if not distributed.launched_under_mpi():
        return None
    distributed.init()
    return distributed


#: Seconds a rank other than 0 waits, after Ctrl-C, for rank 0 to save and end the job.
_SAVE_GRACE_S = 30


def _check_sync_bn(model, sync_bn):
    """A resumed model keeps its batch norms as saved: --sync-bn must say the same (a ValueError
    rather than training, and recording, other statistics than the option asks for)."""
    synced = {layer.sync for layer in _leaf_layers(model.layers) if isinstance(layer, _BatchNorm)}
    if synced and synced != {sync_bn}:
        saved = "synchronised" if True in synced else "per-rank"
        raise ValueError(f"the checkpoint's batch norms are {saved}; resume "
                         f"{'with' if True in synced else 'without'} --sync-bn, as the run was "
                         f"started")


def _stop(dist, status):
    """`status` to return from main; on several ranks the whole job ends with it (MPI_Abort)
    instead: a rank that returns leaves the others waiting forever in their next collective."""
    if dist is not None and dist.size() > 1:
        dist.abort(status)
    return status


def main(argv=None):
    args = parse_args(argv)
    try:
        dist = _start_distributed()
    except ImportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    rank, nranks = (0, 1) if dist is None else (dist.rank(), dist.size())
    rank0 = rank == 0
    log = print if rank0 else (lambda *a, **k: None)
    if args.threads is not None:
        set_num_threads(args.threads)
    elif dist is not None:  # the node's cores shared by its ranks: never oversubscribed
        set_num_threads(max(1, usable_cores() // dist.local_size()))
    try:
        (x_train, y_train), (x_test, y_test) = load_fashion_mnist(args.data)
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return _stop(dist, 2)
    test_n = args.test_subset or args.subset
    if args.subset:
        x_train, y_train = x_train[:args.subset], y_train[:args.subset]
    if test_n:
        x_test, y_test = x_test[:test_n], y_test[:test_n]

    optimizer = make_optimizer(args)
    schedule = cosine_schedule(optimizer.lr, args.epochs) if args.lr_schedule == "cosine" else None
    augment = random_shift_flip if args.augment == "shift-flip" else None
    aug_rng = None
    if args.resume:
        try:
            model, state, done, rng, history = load_checkpoint(args.resume)
            _check_sync_bn(model, args.sync_bn)
            optimizer.load_state_dict(model, state)
            if augment is not None:
                aug_rng = load_augment_rng(args.resume, rank, nranks)
        except (OSError, ValueError) as exc:
            print(f"error: --resume: {exc}", file=sys.stderr)
            return _stop(dist, 2)
        log(f"resuming {args.resume} after epoch {done}")
    else:
        options = {"sync_bn": True} if args.sync_bn else {}
        model = MODELS[args.model](np.random.default_rng(args.seed), args.algorithm, **options)
        rng, done, history = np.random.default_rng(args.seed), 0, None
    if augment is not None and aug_rng is None:
        # fit's own choice, made here so that checkpoints can save (and resume) its state; a
        # checkpoint of a run that did not augment has none, and this starts one
        aug_rng = augmentation_rng(rng, rank)
    ranks = f", {nranks} ranks" if dist is not None else ""
    log(f"fastconv {__version__}, {get_num_threads()} thread(s){ranks}; {args.model} on "
        f"{len(x_train)} training and {len(x_test)} test images")
    if rank0:
        model.summary(x_train.shape[1:])
    if dist is not None:
        dist.broadcast_parameters(model)
        dist.check_models_agree(model)
        optimizer = dist.DistributedOptimizer(optimizer)

    def on_epoch_end(epoch, h):
        log(_epoch_line(epoch, args.epochs, h), flush=True)
        if args.checkpoint_every and (epoch + 1) % args.checkpoint_every == 0:
            states = None
            if aug_rng is not None:  # every rank's, gathered on rank 0 (a collective: all call it)
                state = aug_rng.bit_generator.state
                states = [state] if dist is None else dist.gather_states(state)
            if rank0:
                save_checkpoint(os.path.join(args.out, "checkpoint.npz"), model, optimizer,
                                epoch + 1, rng, h, states)

    interrupted, failed_status = False, 130  # 130: stopped by Ctrl-C (SIGINT), 1: a NaN loss
    start = time.perf_counter()
    try:
        model.fit(x_train, y_train, epochs=args.epochs, batch_size=args.batch_size,
                  optimizer=optimizer, validation_data=(x_test, y_test), seed=rng,
                  lr_schedule=schedule, verbose=not args.quiet and rank0,
                  on_epoch_end=on_epoch_end, initial_epoch=min(done, args.epochs), history=history,
                  augment=augment, augment_rng=aug_rng)
    except KeyboardInterrupt:
        interrupted = True
        print("\ninterrupted: keeping the model of the last complete epoch", file=sys.stderr)
    except FloatingPointError as exc:
        interrupted, failed_status = True, 1
        print(f"\nerror: {exc}; try a smaller --lr", file=sys.stderr)
    history = model.history
    completed = len(history["loss"])
    if completed == 0:
        print("no epoch completed: nothing saved", file=sys.stderr)
        return _stop(dist, 130) if failed_status == 130 else failed_status
    log(f"{completed} epoch(s) in {time.perf_counter() - start:.1f} s; test accuracy "
        f"{history['val_accuracy'][-1]:.4f}")
    if rank0:
        save_run(model, history, args, args.out, (x_test, y_test), interrupted)
    elif interrupted and failed_status == 130:
        # Ctrl-C reaches every rank, but one may be inside a collective the others have left:
        # rank 0 saves and ends the job; this rank gives it time to, then ends it itself.
        time.sleep(_SAVE_GRACE_S)
    if interrupted and failed_status == 130:
        return _stop(dist, failed_status)
    return failed_status if interrupted else 0


if __name__ == "__main__":
    sys.exit(main())
