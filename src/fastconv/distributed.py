"""Data-parallel training over MPI, in Horovod's vocabulary (docs/distributed.md).

Every rank (process) holds a replica of the model. `broadcast_parameters` makes the replicas
identical at the start; `DistributedOptimizer` averages the gradients over the ranks (one
in-place Allreduce of a single fused buffer per step: Horovod's tensor fusion) before the wrapped
optimiser's update, so the replicas stay bitwise identical; `Sequential.fit` splits each global
batch between the ranks when it is given a DistributedOptimizer.

    from fastconv import distributed as dist
    dist.init()
    dist.broadcast_parameters(model)
    model.fit(x, y, optimizer=dist.DistributedOptimizer(nn.Adam(1e-3)), batch_size=64)

Launched as `mpiexec -n 4 python train.py`. Without mpiexec it runs as one rank; without mpi4py
(`pip install 'fastconv[distributed]'`), `init()` raises an ImportError that says so. A rank
that raises stops the whole job (MPI_Abort, after printing the rank and the error), so no rank
waits forever in a collective for one that is gone.
"""
import hashlib
import json
import numbers
import os
import sys
import time
import traceback

import numpy as np

from .nn.optim import Optimizer, _layers

_comm = None
_local_comm = None
_ENV_SIZE = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE", "MPI_LOCALNRANKS")


def launched_under_mpi():
    """True when this process was started by an MPI launcher with more than one rank (read from
    the launcher's environment, without importing MPI)."""
    for name in _ENV_SIZE:
        try:
            if int(os.environ.get(name, "1")) > 1:
                return True
        except ValueError:
            pass
    return False


def _mpi():
    try:
        from mpi4py import MPI
    except ImportError as exc:
        raise ImportError("fastconv.distributed needs mpi4py and an MPI: "
                          "pip install 'fastconv[distributed]' (mpi4py and mpich)") from exc
    return MPI


def init(comm=None):
    """Start MPI (once) and use `comm` (default MPI.COMM_WORLD). With more than one rank, an
    uncaught exception on any rank prints it with the rank and aborts the whole job."""
    global _comm, _local_comm
    MPI = _mpi()
    _comm = MPI.COMM_WORLD if comm is None else comm
    _local_comm = _comm.Split_type(MPI.COMM_TYPE_SHARED)
    if _comm.Get_size() > 1 and sys.excepthook is not _abort_on_exception:
        sys.excepthook = _abort_on_exception
    return _comm


def is_initialized():
    return _comm is not None


def _require():
    if _comm is None:
        raise RuntimeError("fastconv.distributed: call init() first")
    return _comm


def rank():
    """This process's rank, 0 .. size() - 1."""
    return _require().Get_rank()


def size():
    """The number of ranks."""
    return _require().Get_size()


def local_rank():
    """This process's rank among the ranks on its node."""
    _require()
    return _local_comm.Get_rank()


def local_size():
    """The number of ranks on this node."""
    _require()
    return _local_comm.Get_size()


#: Seconds between flushing a rank's output and MPI_Abort. MPICH's mpiexec (Hydra) tears the job
#: down on an abort without draining the processes' pipes: the message a rank printed just before
#: was lost in 6 of 60 runs (2 ranks), in none of 40 after a 0.3 s pause (Zen 3, 2026-12-07).
_ABORT_GRACE_S = 0.5


def _flush_and_abort(comm, status):
    sys.stdout.flush()
    sys.stderr.flush()
    time.sleep(_ABORT_GRACE_S)
    comm.Abort(status)


def _abort_on_exception(kind, value, tb):
    sys.stderr.write(f"fastconv.distributed: rank {_comm.Get_rank()} of {_comm.Get_size()} failed, "
                     f"aborting the job:\n{''.join(traceback.format_exception(kind, value, tb))}")
    _flush_and_abort(_comm, 1)


def abort(status=1):
    """End every rank of the job with exit status `status` (MPI_Abort), after this rank's
    printed output has reached the launcher: for a rank that must stop where the others may be
    waiting for it in a collective (a setup error on one rank only, or Ctrl-C reaching a rank
    outside a collective the others are in)."""
    if isinstance(status, bool) or not isinstance(status, numbers.Integral) or not 0 <= status <= 255:
        # (the system keeps status % 256: abort(256) ended the job with status 0)
        raise ValueError(f"abort: status must be an int in [0, 255], got {status!r}")
    _flush_and_abort(_require(), int(status))


def allreduce(array, op="mean"):
    """The element-wise sum or mean of `array` (an array or a number) over the ranks, as a new
    array (a float for a number). The buffer travels as-is, never pickled."""
    if op not in ("mean", "sum"):
        raise ValueError(f"allreduce: op must be 'mean' or 'sum', got {op!r}")
    comm = _require()
    scalar = np.ndim(array) == 0
    buf = np.array(array, dtype=np.result_type(np.asarray(array).dtype, np.float32), copy=True)
    # Every rank must give the same layout: an empty array against a full one hung the job, and
    # float32 against float64 summed bytes into wrong values (found by fuzzing). One small
    # collective first, so that every rank raises the same error.
    layouts = comm.allgather((buf.shape, buf.dtype.str))
    if len(set(layouts)) > 1:
        raise ValueError(f"allreduce: the ranks gave arrays of different shapes or dtypes "
                         f"(rank: (shape, dtype) {dict(enumerate(layouts))})")
    _sum_in_place(buf, comm)
    if op == "mean":
        buf /= comm.Get_size()
    return float(buf) if scalar else buf


def gather_states(state, root=0):
    """Every rank's `state` (a small JSON-able object, e.g. a generator's state), as a list in
    rank order on `root`, None elsewhere (pickled: for a few bytes of metadata, not arrays)."""
    return _require().gather(state, root=root)


def _sum_in_place(buf, comm):
    comm.Allreduce(_mpi().IN_PLACE, buf, op=_mpi().SUM)


def _fused(arrays, collective, buffer=None):
    """Copy `arrays` into one flat buffer (`buffer` when it fits), run `collective(buffer)` on it
    in place (one message for all of them: Horovod's tensor fusion) and copy the result back into
    the arrays. Returns the buffer, for reuse."""
    total = sum(a.size for a in arrays)
    if buffer is None or buffer.size != total or buffer.dtype != arrays[0].dtype:
        buffer = np.empty(total, arrays[0].dtype)
    offset = 0
    for a in arrays:
        buffer[offset:offset + a.size] = a.ravel()
        offset += a.size
    collective(buffer)
    offset = 0
    for a in arrays:
        a[...] = buffer[offset:offset + a.size].reshape(a.shape)
        offset += a.size
    return buffer


def _parameters(model):
    """(layer index, name, array) of every parameter and buffer (batch norm's running
    statistics), in a fixed order."""
    return [(i, key, arrays[key]) for i, layer in enumerate(model.layers)
            for arrays in (layer.params, layer.buffers) for key in sorted(arrays)]


def broadcast_parameters(model, root=0):
    """Overwrite every rank's parameters and buffers with `root`'s, in one fused buffer."""
    comm = _require()
    params = [p for _, _, p in _parameters(model)]
    if params:
        _fused(params, lambda buf: comm.Bcast(buf, root=root))


def check_models_agree(model, comm=None, settings=None):
    """Raise RuntimeError on every rank unless all ranks hold the same architecture, parameter
    shapes and dtypes and parameter values (a SHA-256 of them), and the same `settings` (a
    JSON-able dict: fit's epochs, batch size, data size, random state... ranks given other ones
    hung, or trained on mixed orders; found by fuzzing). One collective."""
    comm = _require() if comm is None else comm
    arch = json.dumps(model.architecture(), sort_keys=True)
    digest = hashlib.sha256(arch.encode())
    for i, key, p in _parameters(model):
        digest.update(f"{i}.{key}{p.shape}{p.dtype}".encode())
        digest.update(np.ascontiguousarray(p).tobytes())
    mine = (digest.hexdigest(), json.dumps(settings, sort_keys=True, default=str))
    everyone = comm.allgather(mine)
    for part, what, hint in ((0, "models", "architecture, shapes or parameter values; call "
                              "broadcast_parameters(model) after building the same model "
                              "everywhere"),
                             (1, "training settings", f"this rank {comm.Get_rank()}: {mine[1]}; "
                              f"give every rank the same arguments")):
        differ = [r for r, e in enumerate(everyone) if e[part] != everyone[0][part]]
        if differ:
            raise RuntimeError(f"fastconv.distributed: the {what} differ between ranks (rank 0 "
                               f"and ranks {differ}): {hint}")


class DistributedOptimizer(Optimizer):
    """`optimizer` whose step first averages every gradient over the ranks.

    The gradients are copied into one flat buffer (Horovod's tensor fusion), reduced by one
    in-place Allreduce and copied back, then `optimizer` updates the parameters: every rank
    applies the same update to the same parameters, so the replicas stay bitwise identical.
    `lr` and the rest are the wrapped optimiser's.
    """

    def __init__(self, optimizer):
        if not isinstance(optimizer, Optimizer) or isinstance(optimizer, DistributedOptimizer):
            raise TypeError(f"DistributedOptimizer wraps a fastconv.nn optimiser, got "
                            f"{type(optimizer).__name__}")
        self.optimizer = optimizer
        self.comm = _require()
        self._buffer = None

    @property
    def lr(self):
        return self.optimizer.lr

    @lr.setter
    def lr(self, value):
        self.optimizer.lr = value

    @property
    def iterations(self):
        return self.optimizer.iterations

    @property
    def rank(self):
        return self.comm.Get_rank()

    @property
    def size(self):
        return self.comm.Get_size()

    def check_models_agree(self, model, settings=None):
        """check_models_agree(model, settings) over this optimiser's communicator (fit calls it)."""
        check_models_agree(model, self.comm, settings)

    def common_seed(self):
        """A fresh seed drawn on rank 0, the same on every rank: fit's when none is given (each
        rank drew its own, so the ranks shuffled differently and trained some examples twice
        and others never; found by fuzzing)."""
        seed = int(np.random.SeedSequence().entropy) if self.rank == 0 else None
        return self.comm.bcast(seed, root=0)

    def sum_over_ranks(self, values):
        """The element-wise sum of a float64 vector over the ranks (fit's metrics)."""
        buf = np.array(values, dtype=np.float64)
        _sum_in_place(buf, self.comm)
        return buf.tolist()

    def _average(self, buf):
        _sum_in_place(buf, self.comm)
        buf /= self.size

    def step(self, layers):
        layers = _layers(layers)
        arrays = [layer.grads[key] for layer in layers for key in sorted(layer.params)]
        # Running statistics (batch norm) are averaged in the same Allreduce: each rank's moved
        # towards its own share of the batch; the average keeps the replicas identical.
        arrays += [layer.buffers[key] for layer in layers for key in sorted(layer.buffers)]
        if arrays and self.size > 1:
            self._buffer = _fused(arrays, self._average, self._buffer)
        self.optimizer.step(layers)

    def state_dict(self, model):
        return self.optimizer.state_dict(model)

    def load_state_dict(self, model, state):
        self.optimizer.load_state_dict(model, state)
