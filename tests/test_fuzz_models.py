"""Fuzzing (hypothesis) over whole fastconv.nn models: random stacks of every layer type
(Residual blocks with every kind of tail, fused and in-place pairs, parameter-free branches,
batch norms, dropout), checked in float64 against central finite differences, fused against
unfused, and for writes into the caller's arrays. Each model is planned by Sequential as a user's
would be, so this covers what the per-layer tests cannot: how the layers' in-place and fused
plans combine. (Three defects of that kind were found this way and fixed: a Residual's sum
overwrote the output its body's ReLU kept; parameter-free branches ran in float32 inside float64
models; Dropout ran as the identity after an evaluation pass.)"""
import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastconv import nn

from test_nn import model_loss, numeric_grad

MODELS = settings(max_examples=25, deadline=None, derandomize=True,
                  suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                         HealthCheck.function_scoped_fixture])

# Blocks a (C, H, W) activation goes through, each a function (rng, c) -> (layers, c_out). No
# ReLU directly before a max-pool over a window that may be all zeros would matter here: the
# inputs are continuous draws, and a ReLU's zeros tie only where every entry is cut, which
# finite differences see as a kink; MaxPool2D(1) and strided convolutions stand in for those.
BLOCKS = {
    "conv": lambda rng, c: ([nn.Conv2D(c, 3, 3, padding=1, seed=rng)], 3),
    "conv_strided": lambda rng, c: ([nn.Conv2D(c, 2, 2, stride=2, padding=1, seed=rng)], 2),
    "conv_dilated_grouped": lambda rng, c: ([nn.Conv2D(c, 2 * c, 3, padding=2, dilation=2,
                                                       groups=c, seed=rng)], 2 * c),
    "relu": lambda rng, c: ([nn.ReLU()], c),
    "relu_relu": lambda rng, c: ([nn.ReLU(), nn.ReLU()], c),
    "relu_maxpool1": lambda rng, c: ([nn.ReLU(), nn.MaxPool2D(1)], c),
    "avgpool": lambda rng, c: ([nn.AvgPool2D(2, stride=1, padding=1)], c),
    "l2pool": lambda rng, c: ([nn.L2Pool2D(2, stride=1)], c),
    "bn": lambda rng, c: ([nn.BatchNorm2D(c)], c),
    "bn_relu": lambda rng, c: ([nn.BatchNorm2D(c, affine=bool(rng.integers(2))), nn.ReLU()], c),
    "dropout0": lambda rng, c: ([nn.Dropout(0.0)], c),
}
TAILS = ["none", "relu", "bn", "bn_relu", "relu_dropout0", "relu_maxpool1"]


def residual(rng, c, tail, projection):
    body = [nn.Conv2D(c, c, 3, padding=1, seed=rng)]
    body += {"none": [], "relu": [nn.ReLU()], "bn": [nn.BatchNorm2D(c)],
             "bn_relu": [nn.BatchNorm2D(c), nn.ReLU()],
             "relu_dropout0": [nn.ReLU(), nn.Dropout(0.0)],
             "relu_maxpool1": [nn.ReLU(), nn.MaxPool2D(1)]}[tail]
    shortcut = [nn.Conv2D(c, c, 1, seed=rng)] if projection else None
    if tail == "none" and not projection and rng.integers(2):
        body = [nn.ReLU()]  # a branch without parameters
    return nn.Residual(body, shortcut)


@st.composite
def models(draw):
    seed = draw(st.integers(0, 2**31))
    rng = np.random.default_rng(seed)
    shape = (draw(st.integers(2, 3)), draw(st.integers(1, 3)), draw(st.integers(3, 5)),
             draw(st.integers(3, 5)))
    h, w = shape[2:]
    spec = []
    for _ in range(draw(st.integers(1, 4))):
        if draw(st.booleans()):
            spec.append(("residual", draw(st.sampled_from(TAILS)), draw(st.booleans())))
            continue
        block = draw(st.sampled_from([b for b in sorted(BLOCKS) if b != "l2pool" or min(h, w) > 1]))
        h, w = {"conv_strided": (h // 2 + 1, w // 2 + 1), "avgpool": (h + 1, w + 1),
                "l2pool": (h - 1, w - 1)}.get(block, (h, w))
        spec.append((block,))
    head = draw(st.sampled_from(["flatten", "gap", "flatten_dropout", "gap_bn1d_relu"]))
    return seed, spec, head, shape


def build(seed, spec, head, shape, fuse):
    rng = np.random.default_rng(seed)
    c = shape[1]
    layers = []
    for item in spec:
        if item[0] == "residual":
            layers.append(residual(rng, c, item[1], item[2]))
        else:
            block, c = BLOCKS[item[0]](rng, c)
            layers += block
    probe = nn.Sequential(layers, fuse=fuse).astype(np.float64)
    out = probe.forward(np.zeros(shape), training=False).shape
    if head.startswith("gap"):
        layers += [nn.GlobalAvgPool2D()]
        features = out[1]
    else:
        layers += [nn.Flatten()]
        features = int(np.prod(out[1:]))
    if head == "flatten_dropout":
        layers += [nn.Dropout(0.5, seed=rng)]
    layers += [nn.Dense(features, 4, seed=rng)]
    if head == "gap_bn1d_relu":
        layers += [nn.BatchNorm1D(4), nn.ReLU()]
    layers += [nn.Dense(4, 3, seed=rng)]
    return nn.Sequential(layers, input_grad=True, fuse=fuse).astype(np.float64)


def check_gradients(model, x, y):
    """Every parameter's and x's gradient against central differences, element by element with
    an absolute floor: stacked normalisations make some parameters nearly irrelevant (a batch
    norm's gamma before another batch norm), whose tiny gradients a relative test cannot judge."""
    loss, dlogits = model_loss(model, x, y)
    dx = model.backward(dlogits)
    for i, layer in enumerate(model.layers):
        for key, p in layer.params.items():
            num = numeric_grad(lambda: model_loss(model, x, y)[0], p)
            np.testing.assert_allclose(layer.grads[key], num, rtol=1e-5, atol=1e-7,
                                       err_msg=f"layer {i} ({type(layer).__name__}) {key}")
    num = numeric_grad(lambda: model_loss(model, x, y)[0], x)
    np.testing.assert_allclose(dx, num, rtol=1e-5, atol=1e-7, err_msg="dx")
    return loss


@MODELS
@given(models())
def test_random_models_match_finite_differences_fused_or_not(one_thread, model_spec):
    seed, spec, head, shape = model_spec
    rng = np.random.default_rng(seed + 1)
    x = rng.standard_normal(shape)
    y = rng.integers(0, 3, shape[0])
    keep = x.copy()
    losses, grads = [], []
    for fuse in (True, False):
        model = build(seed, spec, head, shape, fuse)
        loss = check_gradients(model, x, y)
        np.testing.assert_array_equal(x, keep)  # the caller's x is never written
        losses.append(loss)
        # one more pass for the gradients at the same parameters, and dout left untouched
        _, dlogits = model_loss(model, x, y)
        dout = dlogits.copy()
        dx = model.backward(dout)
        np.testing.assert_array_equal(dout, dlogits)
        assert dx.dtype == np.float64
        grads.append([dx] + [g for layer in model.layers for g in layer.grads.values()])
    assert abs(losses[0] - losses[1]) <= 1e-12 * max(1.0, abs(losses[0]))
    for a, b in zip(*grads):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)
