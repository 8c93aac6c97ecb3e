"""The memory model (cnndsl/passes/memory.py) and `cnndsl bench`.

Without a GPU the model is checked against allocations worked out by hand; with one,
against torch.cuda.max_memory_allocated (skipped cleanly when CUDA is absent).
"""

from __future__ import annotations

import pytest

import cnndsl
from cnndsl.passes.memory import estimate, relu_in_place

TINY = "network Tiny\ninput 8x8x1\n3x3 conv, 4\nrelu\nFC 2\n"
WEIGHTS = (3 * 3 * 1 * 4 + 4 + 8 * 8 * 4 * 2 + 2) * 4  # 554 params, fp32


def _estimate(text: str, **kw):
    net = cnndsl.loads(text)
    r = net.report
    return estimate(r.graph, r.shapes, r.counts, **kw)


def test_inference_peak_by_hand():
    # weights, then the conv's output while its input is still alive; the ReLU overwrites
    # the conv's output in place; the FC's 2 outputs come after the input is freed.
    m = _estimate(TINY)
    assert m.weights == WEIGHTS
    assert m.peak == WEIGHTS + 64 * 4 + 256 * 4
    assert m.phase == "forward"


def test_training_peak_by_hand():
    # Plain SGD without weight decay: backward peaks when the ReLU's input gradient (1,024 B)
    # joins its output gradient, the saved input and conv output, and the FC's weight
    # gradients: 7,608 B. In the steady state (the second step on) the optimizer's state,
    # made by the first step, is held through that same moment: momentum one copy of the
    # parameters, Adam two. The step itself then holds weights, gradients, the state and
    # the decayed-gradient temporaries (3 + copies copies of the parameters), which is less.
    plain = _estimate(TINY, training=True, optimizer="sgd", weight_decay=False)
    assert (plain.peak, plain.phase, plain.optimizer_state) == (7608, "backward", 0)
    for optimizer, copies in (("sgd-momentum", 1), ("adam", 2)):
        m = _estimate(TINY, training=True, optimizer=optimizer)
        assert m.peak == 7608 + copies * WEIGHTS and m.phase == "backward", optimizer
        assert m.optimizer_state == copies * WEIGHTS and m.peak > (3 + copies) * WEIGHTS
    # With weight decay and no state, the step's three copies (6,648 B) stay under backward's peak.
    assert _estimate(TINY, training=True, optimizer="sgd").peak == 7608


def test_relu_in_place_only_when_safe():
    net = cnndsl.loads("input 8x8x3\nc: 3x3 conv, 4\nrelu\nadd c\n")  # the conv is read twice
    assert not relu_in_place(net.graph)
    net = cnndsl.loads("input 8x8x3\nc: 3x3 conv, 4\nconcat { relu\n identity }\n")  # read by the ReLU and the concat
    assert not relu_in_place(net.graph)
    net = cnndsl.loads("input 8x8x3\n3x3 conv, 4\nrelu\nmax pool\n")
    assert relu_in_place(net.graph) == {2}


@pytest.mark.parametrize("name", ["vgg16", "resnet50"])
def test_scaling(name):
    net = cnndsl.load(f"architectures/{name}.arch")
    r = net.report
    one = estimate(r.graph, r.shapes, r.counts, batch=1)
    many = estimate(r.graph, r.shapes, r.counts, batch=32)
    train = estimate(r.graph, r.shapes, r.counts, batch=32, training=True)
    assert one.weights == many.weights == r.totals.params * 4 + _buffers(net) * 4
    assert many.peak - many.weights > 20 * (one.peak - one.weights)  # activations grow with the batch
    assert train.peak > many.peak and train.gradients > 0
    half = estimate(r.graph, r.shapes, r.counts, batch=32, dtype="bf16")
    assert half.peak == pytest.approx(many.peak / 2, rel=0.01)


def _buffers(net) -> int:
    from cnndsl.backends.params import param_specs
    import math
    return sum(math.prod(s.shape) for s in param_specs(net.graph, net.shapes)
               if not s.trainable and s.role != "num_batches_tracked")


def test_check_prints_memory(cli):
    res = cli("check", "architectures/vgg16.arch", "--batch", "32", "--training", "--json")
    import json
    mem = json.loads(res.out)["memory"]
    assert set(mem) == {"inference", "training"}
    assert mem["training"]["peak_bytes"] > mem["inference"]["peak_bytes"]
    res = cli("check", "architectures/vgg16.arch", "--training", "--optimizer", "adam")
    assert res.code == 0 and "training step (adam" in res.out and "in the steady state" in res.out


def test_bench_on_cpu(cli):
    res = cli("bench", "architectures/lenet5.arch", "--device", "cpu", "--warmup", "1", "--iterations", "2")
    assert res.code == 0, res.err
    assert "images/s" in res.out and "predicted" in res.out and "warming up" in res.err
    res = cli("bench", "architectures/lenet5.arch", "--device", "cpu", "--cuda-graphs")
    assert res.code == 2 and "needs --device cuda" in res.err


torch = pytest.importorskip("torch")
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device (the memory model is checked on a GPU)")


def _optimizer(name: str, params):
    if name == "adam":
        return torch.optim.Adam(params, lr=1e-3, weight_decay=5e-4)
    return torch.optim.SGD(params, lr=0.01, momentum=0.9, weight_decay=5e-4)


def _steady_state_peak(model, x, optimizer: str) -> int:
    """Peak bytes of the second training step: the first makes the optimizer's state; the
    peak statistics are reset between the two (gradients freed, set_to_none)."""
    opt = _optimizer(optimizer, model.parameters())
    model.train()

    def step():
        torch.log(model(x) + 1e-9).mean().backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    step()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    step()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated()


@needs_cuda
@pytest.mark.parametrize("name", ["vgg16", "resnet50"])
@pytest.mark.parametrize("batch", [1, 32])
@pytest.mark.parametrize("training", [None, "sgd-momentum", "adam"])
def test_predicted_peak_matches_cuda(name, batch, training):
    net = cnndsl.load(f"architectures/{name}.arch")
    r = net.report
    torch.cuda.empty_cache()
    model = net.to_torch(seed=0).cuda()
    x = torch.randn(batch, r.shapes[0].channels, *r.shapes[0].spatial, device="cuda")
    torch.cuda.synchronize()
    if training:
        measured = _steady_state_peak(model, x, training)
    else:
        torch.cuda.reset_peak_memory_stats()
        with torch.no_grad():
            model.eval()(x)
        torch.cuda.synchronize()
        measured = torch.cuda.max_memory_allocated()
    predicted = estimate(r.graph, r.shapes, r.counts, batch=batch, training=bool(training),
                         optimizer=training or "sgd-momentum").peak
    assert predicted == pytest.approx(measured, rel=0.10)
