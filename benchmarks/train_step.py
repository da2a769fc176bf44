"""One SGD training step of the benchmark CNN, written over fastconv's op namespaces and over torch.nn.

conv(1->32,3x3,p1)-ReLU-maxpool2-conv(32->64,3x3,p1)-ReLU-maxpool2-dense(3136->128)-ReLU-dense(128->10),
softmax cross-entropy. The fastconv side is explicit forward/backward/update over a namespace of
functional ops, so the same code runs with `fastconv.functional` and with `fastconv.reference`
(same signatures) and does not depend on `fastconv.nn`. Parameters travel in one canonical layout
(PyTorch's: conv (K, C, R, S), dense (out, in)) so the three sides start from identical weights
and their losses and gradients can be compared.
"""
import numpy as np

PARAM_SHAPES = {
    "conv1_w": (32, 1, 3, 3), "conv1_b": (32,),
    "conv2_w": (64, 32, 3, 3), "conv2_b": (64,),
    "fc1_w": (128, 3136), "fc1_b": (128,),
    "fc2_w": (10, 128), "fc2_b": (10,),
}
_DENSE = ("fc1_w", "fc2_w")  # stored (out, in) canonically; fastconv.linear wants (in, out)


def make_problem(batch, seed=0):
    """{"x": (batch, 1, 28, 28) float32, "labels": (batch,) int64, "params": canonical float32}."""
    rng = np.random.default_rng(seed)
    params = {}
    for name, shape in PARAM_SHAPES.items():
        if name.endswith("_b"):
            # Non-zero biases, so a wrong bias gradient shows in the check.
            params[name] = (0.01 * rng.standard_normal(shape)).astype(np.float32)
        else:
            fan_in = int(np.prod(shape[1:]))
            params[name] = (rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)
    return {
        "x": rng.random((batch, 1, 28, 28), dtype=np.float32),
        "labels": rng.integers(0, 10, batch).astype(np.int64),
        "params": params,
    }


# ---------------------------------------------------------------- fastconv (functional ops)
def to_functional_layout(params):
    """Fresh C-ordered copies (steps update them in place; the problem's arrays stay initial)."""
    return {k: np.array(v.T if k in _DENSE else v, order="C") for k, v in params.items()}


def from_functional_layout(grads):
    return {k: np.ascontiguousarray(v.T if k in _DENSE else v) for k, v in grads.items()}


def forward_backward(F, p, x, labels, algorithm="auto"):
    """(loss, grads) for params `p` in functional layout, over the op namespace F."""
    n = x.shape[0]
    h1 = F.conv2d(x, p["conv1_w"], p["conv1_b"], 1, 1, algorithm=algorithm)
    q1 = F.relu_max_pool2d(h1, 2)  # max_pool2d(relu(h1)) in one pass, as fastconv.nn runs it
    h2 = F.conv2d(q1, p["conv2_w"], p["conv2_b"], 1, 1, algorithm=algorithm)
    q2 = F.relu_max_pool2d(h2, 2)
    flat = q2.reshape(n, -1)
    h3 = F.linear(flat, p["fc1_w"], p["fc1_b"])
    a3 = F.relu(h3)
    logits = F.linear(a3, p["fc2_w"], p["fc2_b"])
    loss, dlogits = F.softmax_cross_entropy(logits, labels)

    g = {}
    da3, g["fc2_w"], g["fc2_b"] = F.linear_backward(dlogits, a3, p["fc2_w"])
    dflat, g["fc1_w"], g["fc1_b"] = F.linear_backward(F.relu_backward(da3, h3), flat, p["fc1_w"])
    dh2 = F.relu_max_pool2d_backward(dflat.reshape(q2.shape), h2, 2)
    dq1 = F.conv2d_backward_data(dh2, q1.shape, p["conv2_w"], 1, 1, algorithm=algorithm)
    g["conv2_w"] = F.conv2d_backward_weights(dh2, q1, p["conv2_w"].shape, 1, 1, algorithm=algorithm)
    g["conv2_b"] = dh2.sum(axis=(0, 2, 3))
    dh1 = F.relu_max_pool2d_backward(dq1, h1, 2)
    # The input needs no gradient: the first layer's backward-data pass is skipped, as in torch.
    g["conv1_w"] = F.conv2d_backward_weights(dh1, x, p["conv1_w"].shape, 1, 1, algorithm=algorithm)
    g["conv1_b"] = dh1.sum(axis=(0, 2, 3))
    return float(loss), g


def functional_stepper(F, problem, lr, algorithm="auto"):
    """(step, check): step() runs one SGD step in place and returns the loss; check() returns
    [loss, *grads in canonical layout] from the initial weights, for comparison."""
    x, labels = problem["x"], problem["labels"]
    params = to_functional_layout(problem["params"])

    def step():
        loss, grads = forward_backward(F, params, x, labels, algorithm)
        for name, grad in grads.items():
            params[name] -= np.asarray(lr, grad.dtype) * grad
        return loss

    def check():
        loss, grads = forward_backward(F, to_functional_layout(problem["params"]), x, labels, algorithm)
        grads = from_functional_layout(grads)
        return [np.array([loss])] + [grads[name] for name in PARAM_SHAPES]

    return step, check


# ---------------------------------------------------------------- torch.nn
def torch_stepper(torch, problem, lr):
    """The same step with torch.nn layers, torch.optim.SGD and nn.CrossEntropyLoss."""
    nn = torch.nn

    def build():
        model = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(3136, 128), nn.ReLU(), nn.Linear(128, 10))
        layers = {"conv1": model[0], "conv2": model[3], "fc1": model[7], "fc2": model[9]}
        with torch.no_grad():
            for name, layer in layers.items():
                layer.weight.copy_(torch.from_numpy(problem["params"][name + "_w"]))
                layer.bias.copy_(torch.from_numpy(problem["params"][name + "_b"]))
        return model, layers

    x = torch.from_numpy(problem["x"])
    labels = torch.from_numpy(problem["labels"])
    criterion = nn.CrossEntropyLoss()
    model, _ = build()
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)

    def step():
        optimizer.zero_grad(set_to_none=True)
        loss = criterion(model(x), labels)
        loss.backward()
        optimizer.step()
        return loss.item()

    def check():
        fresh, layers = build()
        loss = criterion(fresh(x), labels)
        loss.backward()
        grads = {}
        for name, layer in layers.items():
            grads[name + "_w"] = layer.weight.grad.numpy()
            grads[name + "_b"] = layer.bias.grad.numpy()
        return [np.array([loss.item()])] + [grads[name] for name in PARAM_SHAPES]

    return step, check
