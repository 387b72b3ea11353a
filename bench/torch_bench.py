#!/usr/bin/env python3
"""PyTorch side of `cargo xtask bench --vs torch`: the reference workloads on the CPU, float32.

Naming convention (shared with xtask/src/bench.rs and the criterion benches):
  criterion benchmark id = <group>/<impl>/<param>, group = <WORKLOAD>_<name>,
  e.g. W1_matmul/strata/n=256. A result row is
    {"workload": "W1", "variant": "matmul n=256", "impl": "torch",
     "median_s": 0.00123, "throughput": 27.3, "unit": "GFLOP/s"}
  with variant = "<name> <param>". This script reports impl "torch" with exactly the
  variants the Rust benches use:
    W1 matmul n=256|n=512|n=1024|n=2048   a @ b, square          2n^3 FLOP       GFLOP/s
    W1 gemm fwd_128x512x784t|...          the products training runs (GEMM_SHAPES)  GFLOP/s
    W1 gemm linear_bias_128x512x784|...   Linear forwards with bias (+ ReLU) (LINEAR_SHAPES)  GFLOP/s
    W2 conv2d fwd                         x[32,3,32,32] * w[32,3,3,3], pad 1, no bias
                                          2*N*O*Ho*Wo*C*kh*kw FLOP                GFLOP/s
    W2 conv2d fwd+bwd                     nn.Conv2d(3,32,3,padding=1) forward and backward
                                          (input and weight gradients), 3x the FLOP GFLOP/s
    W3 cnn train_step_b32                 one SGD(lr 0.01) step of the reference CNN on
                                          [32,3,32,32] with cross-entropy         us/step
    W4 mlp adam_step_b128                 one Adam(lr 1e-3) step of 784-512-256-10 at
                                          batch 128 with cross-entropy            us/step
    W4 adamw update_10M                   AdamW.step() alone on 10M parameters
                                          7*4*n bytes                              GB/s
    W5 lstm fwd+bwd                       nn.LSTM(64, 256), x[64,32,64] (seq, batch, in):
                                          forward, mean(out^2).backward()          ms
    W6 transformer adamw_step             one AdamW(lr 1e-4) step of a post-norm
                                          TransformerEncoderLayer(256, 8, 1024, dropout 0,
                                          batch_first), x[16,128,256], loss mean(out^2)  ms
    W7 elementwise add                    a + b (allocating)     3*4*n bytes     GB/s
    W7 elementwise add_inplace            a.add_(b)              3*4*n bytes     GB/s
    W7 elementwise gelu                   F.gelu(a) (exact, erf) 2*4*n bytes     GB/s
                                          n = 16,777,216 f32
    W8 autograd linreg                    1000 SGD steps of the literal linear-regression
                                          loop per call                          us/step
    W8 autograd small_op                  y = a * b; y.backward(ones(1)), [1]-shaped
                                                                                 us/step
    W9 softmax 4096x1024                  softmax(x, dim=-1)     2*4*numel bytes GB/s
    W9 layer_norm 4096x1024               F.layer_norm over the last axis, with
                                          weight and bias         2*4*numel bytes GB/s
    W11 cnn step_b32 | dp_step_b32        W3's SGD(lr 0.01) step, plain and with Opacus
                                          (GradSampleModule + DPOptimizer, sigma 1, C 1,
                                          expected batch 32; only when opacus imports) us/step
    W11 lstm step | dp_step               W5's LSTM (Opacus: DPLSTM(64, 256)), loss
                                          mean(out^2), one SGD(lr 0.01) step, plain and
                                          with Opacus                             us/step
    W10 cnn sgd_b32 1x2 | 2x1             W3's step at a global batch of 32: one process
                                          with 2 threads, or DistributedDataParallel over
                                          gloo on 2 processes of 1 thread (16 each) us/step
    W10 mlp adam_b128 1x2 | 2x1           W4's step at a global batch of 128, the same
                                          two ways                                us/step
    W10 deep adam_b128 1x2 | 2x1          an MLP 1024-1024x4-10, Adam, batch 128, DDP
                                          buckets of 4 MB (overlap companion)     us/step
  median_s is the median time of one call (for linreg: one call = 1000 steps; for the
  2x1 rows of W10: one step on rank 0, timed inside the worker processes).

FILTER (--filter): a bare workload id such as W1 selects exactly that workload (not W10);
anything else is a substring of the benchmark id "<group>/torch/<param>" -- the same rule
xtask applies to the criterion benches.

Output: a JSON list on stdout; progress on stderr.
Usage: python3 bench/torch_bench.py [--threads N] [--filter F] [--min-time S] [--samples K]
       python3 bench/torch_bench.py --filter W6 --peak-rss 10   (peak resident memory)
"""

import argparse
import gc
import json
import math
import re
import statistics
import sys
import time

# (workload, name, param): the benchmark id is f"{workload}_{name}/torch/{param}".
MATMUL_SIZES = (256, 512, 1024, 2048)
# The products training runs (bench/benches/tensor_ops.rs, GEMM_SHAPES): (param, [batch, m,
# n, k], a transposed, b transposed).
GEMM_SHAPES = (
    ("fwd_128x512x784t", (1, 128, 512, 784), False, True),
    ("dgrad_128x784x512", (1, 128, 784, 512), False, False),
    ("wgrad_512tx784x128", (1, 512, 784, 128), True, False),
    ("fwd_32x512x784t", (1, 32, 512, 784), False, True),
    ("qkv_2048x768x256t", (1, 2048, 768, 256), False, True),
    ("wgrad_1024tx256x2048", (1, 1024, 256, 2048), True, False),
    ("scores_b128_128x128x32t", (128, 128, 128, 32), False, True),
)
# Linear forwards with their epilogue (bench/benches/tensor_ops.rs, LINEAR_SHAPES): (param,
# (rows, out, in), relu).
LINEAR_SHAPES = (
    ("linear_bias_128x512x784", (128, 512, 784), False),
    ("linear_relu_2048x1024x256", (2048, 1024, 256), True),
)
ELEMENTWISE_LEN = 16_777_216
CONV_X = (32, 3, 32, 32)
CONV_W = (32, 3, 3, 3)
SOFTMAX_SHAPE = (4096, 1024)
LINREG_STEPS = 1000


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default 2)")
    p.add_argument("--filter", default=None, help="workload id (W1) or benchmark id substring")
    p.add_argument("--min-time", type=float, default=1.0,
                   help="seconds of timed calls per workload (default 1.0)")
    p.add_argument("--samples", type=int, default=20, help="timing samples (default 20)")
    p.add_argument("--list", action="store_true", help="print the benchmark ids and exit")
    p.add_argument("--peak-rss", type=int, default=0, metavar="CALLS",
                   help="instead of timing, run each selected workload CALLS times in this "
                        "process and report its peak resident memory (select one workload "
                        "per process: the peak is the process's)")
    args = p.parse_args()
    if args.threads < 1 or args.samples < 1 or not args.min_time > 0:
        p.error("--threads and --samples must be >= 1 and --min-time > 0")
    return args


def matches(filter_, workload, bench_id):
    """The shared FILTER rule: exact workload for a bare id like W1, else a substring."""
    if filter_ is None:
        return True
    if re.fullmatch(r"W[0-9]+", filter_):
        return workload == filter_
    return filter_ in bench_id


def measure(fn, min_time, samples):
    """Median seconds per call: warm up, size samples to ~min_time/samples each, time them."""
    warm = []
    start = time.perf_counter()
    while len(warm) < 3 or time.perf_counter() - start < min_time / 4:
        t = time.perf_counter()
        fn()
        warm.append(time.perf_counter() - t)
    per_call = max(statistics.median(warm), 1e-9)
    calls = max(1, math.ceil(min_time / samples / per_call))
    times = []
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for _ in range(samples):
            t = time.perf_counter()
            for _ in range(calls):
                fn()
            times.append((time.perf_counter() - t) / calls)
    finally:
        if gc_was_enabled:
            gc.enable()
    return statistics.median(times)


def make_cnn(torch):
    """W3's model (the reference CNN on 3x32x32) and its SGD(lr 0.01)."""
    nn, F = torch.nn, torch.nn.functional

    class Cnn(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(3, 32, 3, padding=1)
            self.fc1 = nn.Linear(32 * 16 * 16, 128)
            self.fc2 = nn.Linear(128, 10)

        def forward(self, x):
            x = F.max_pool2d(F.relu(self.conv1(x)), 2, 2)
            return self.fc2(F.relu(self.fc1(torch.flatten(x, 1))))

    model = Cnn()
    return model, torch.optim.SGD(model.parameters(), lr=0.01)


def make_mlp(torch):
    """W4's model (MLP 784-512-256-10) and its Adam(lr 1e-3)."""
    nn = torch.nn
    model = nn.Sequential(nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 256), nn.ReLU(), nn.Linear(256, 10))
    return model, torch.optim.Adam(model.parameters(), lr=1e-3)


def make_deep(torch):
    """W10's overlap companion: an MLP 1024-1024x4-10 and its Adam(lr 1e-3)."""
    nn = torch.nn
    layers = []
    for _ in range(4):
        layers += [nn.Linear(1024, 1024), nn.ReLU()]
    model = nn.Sequential(*layers, nn.Linear(1024, 10))
    return model, torch.optim.Adam(model.parameters(), lr=1e-3)


# W10: (group, param, global batch, sample shape, model factory, DDP bucket_cap_mb).
DDP_WORKLOADS = (
    ("cnn", "sgd_b32", 32, (3, 32, 32), make_cnn, 25),
    ("mlp", "adam_b128", 128, (784,), make_mlp, 25),
    ("deep", "adam_b128", 128, (1024,), make_deep, 4),
)


def ddp_worker(rank, world, index, steps, warmup, port, queue):
    """One rank of W10's 2x1 mode: DistributedDataParallel over gloo, one thread."""
    import torch
    import torch.distributed as dist
    torch.set_num_threads(1)
    torch.set_num_interop_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=world)
    _, _, batch, sample, make, cap = DDP_WORKLOADS[index]
    torch.manual_seed(0)
    model, opt = make(torch)  # DDP wraps the module: its parameters are the optimizer's
    ddp = torch.nn.parallel.DistributedDataParallel(model, bucket_cap_mb=cap)
    local = batch // world
    x = torch.randn(batch, *sample)[rank * local:(rank + 1) * local]
    y = (torch.arange(batch) % 10)[rank * local:(rank + 1) * local]
    F = torch.nn.functional
    times = []
    for i in range(warmup + steps):
        if i == warmup:
            dist.barrier()
        t = time.perf_counter()
        opt.zero_grad()
        F.cross_entropy(ddp(x), y).backward()
        opt.step()
        if i >= warmup:
            times.append(time.perf_counter() - t)
    if rank == 0:
        queue.put(statistics.median(times))
    dist.barrier()
    dist.destroy_process_group()


def ddp_rows(args):
    """W10's rows: each workload at its global batch on one process with 2 threads (in
    this process), and on 2 processes of 1 thread each under DistributedDataParallel."""
    import socket
    import torch
    import torch.multiprocessing as mp
    F = torch.nn.functional
    rows = []
    for index, (group, param, batch, sample, make, _) in enumerate(DDP_WORKLOADS):
        for mode in ("1x2", "2x1"):
            bench_id = f"W10_{group}/torch/{param} {mode}"
            if not matches(args.filter, "W10", bench_id):
                continue
            if mode == "1x2":
                torch.set_num_threads(2)
                model, opt = make(torch)
                x, y = torch.randn(batch, *sample), torch.arange(batch) % 10

                def call():
                    opt.zero_grad()
                    F.cross_entropy(model(x), y).backward()
                    opt.step()

                median_s = measure(call, args.min_time, args.samples)
                torch.set_num_threads(args.threads)
            else:
                median_s = None
                # A worker of gloo's process group aborts now and then (SIGABRT at start-up or
                # teardown): try twice, then leave the row out rather than lose the round's
                # other rows.
                for attempt in (1, 2):
                    with socket.socket() as s:
                        s.bind(("127.0.0.1", 0))
                        port = s.getsockname()[1]
                    queue = mp.get_context("spawn").SimpleQueue()
                    try:
                        mp.spawn(ddp_worker, args=(2, index, 60, 10, port, queue), nprocs=2,
                                 join=True)
                    except Exception as e:  # noqa: BLE001 - any worker failure
                        print(f"torch {bench_id}: attempt {attempt} failed: {e}", file=sys.stderr,
                              flush=True)
                        if not queue.empty():  # rank 0 measured before a rank failed
                            median_s = queue.get()
                            break
                        continue
                    median_s = queue.get()
                    break
                if median_s is None:
                    print(f"torch {bench_id}: left out (the DDP workers failed twice)",
                          file=sys.stderr, flush=True)
                    continue
            print(f"torch {bench_id}: median {median_s * 1e3:.4f} ms", file=sys.stderr, flush=True)
            rows.append({"workload": "W10", "variant": f"{group} {param} {mode}", "impl": "torch",
                         "median_s": median_s, "throughput": median_s * 1e6, "unit": "us/step"})
    return rows


def workloads(torch):
    """Yields (workload, name, param, setup); setup() -> (call, count, kind).

    kind is "flops" (GFLOP/s), "bytes" (GB/s), "steps" (us/step) or "ms" (the median in
    milliseconds); count is per call.
    Tensors are built lazily in setup so filtered-out workloads cost nothing.
    """
    F = torch.nn.functional

    def matmul(n):
        def setup():
            a, b = torch.randn(n, n), torch.randn(n, n)
            return (lambda: a @ b), 2 * n**3, "flops"
        return setup

    for n in MATMUL_SIZES:
        yield "W1", "matmul", f"n={n}", matmul(n)

    def gemm(batch, m, n, k, ta, tb):
        def setup():
            def operand(rows, cols, transposed):
                t = torch.randn(batch, cols, rows).transpose(1, 2) if transposed \
                    else torch.randn(batch, rows, cols)
                return t[0] if batch == 1 else t
            a, b = operand(m, k, ta), operand(k, n, tb)
            return (lambda: a @ b), 2 * batch * m * n * k, "flops"
        return setup

    for param, (batch, m, n, k), ta, tb in GEMM_SHAPES:
        yield "W1", "gemm", param, gemm(batch, m, n, k, ta, tb)

    def linear(rows, out, inf, relu):
        def setup():
            x, w, b = torch.randn(rows, inf), torch.randn(out, inf), torch.randn(out)
            call = (lambda: F.relu(F.linear(x, w, b))) if relu else (lambda: F.linear(x, w, b))
            return call, 2 * rows * out * inf, "flops"
        return setup

    for param, (rows, out, inf), relu in LINEAR_SHAPES:
        yield "W1", "gemm", param, linear(rows, out, inf, relu)

    def conv2d():
        x, w = torch.randn(*CONV_X), torch.randn(*CONV_W)
        (n, c, h, wd), (o, _, kh, kw) = CONV_X, CONV_W
        flops = 2 * n * o * h * wd * c * kh * kw  # padding 1, stride 1: Ho = H, Wo = W
        return (lambda: F.conv2d(x, w, padding=1)), flops, "flops"

    yield "W2", "conv2d", "fwd", conv2d

    def conv2d_backward():
        conv = torch.nn.Conv2d(3, 32, 3, padding=1)
        x = torch.randn(*CONV_X, requires_grad=True)
        ones = torch.ones(32, 32, 32, 32)
        (n, c, h, wd), (o, _, kh, kw) = CONV_X, CONV_W

        def call():
            conv(x).backward(ones)
            conv.zero_grad(set_to_none=True)
            x.grad = None

        return call, 3 * 2 * n * o * h * wd * c * kh * kw, "flops"

    yield "W2", "conv2d", "fwd+bwd", conv2d_backward

    def cnn_step():
        model, opt = make_cnn(torch)
        x, y = torch.randn(32, 3, 32, 32), torch.arange(32) % 10

        def call():
            opt.zero_grad()
            F.cross_entropy(model(x), y).backward()
            opt.step()

        return call, 1, "steps"

    yield "W3", "cnn", "train_step_b32", cnn_step

    def mlp_step():
        model, opt = make_mlp(torch)
        x, y = torch.randn(128, 784), torch.arange(128) % 10

        def call():
            opt.zero_grad()
            F.cross_entropy(model(x), y).backward()
            opt.step()

        return call, 1, "steps"

    yield "W4", "mlp", "adam_step_b128", mlp_step

    def adamw_update():
        n = 10_000_000
        p = torch.nn.Parameter(torch.randn(n))
        p.grad = torch.randn(n)
        opt = torch.optim.AdamW([p])
        return opt.step, 7 * 4 * n, "bytes"

    yield "W4", "adamw", "update_10M", adamw_update

    def lstm():
        nn = torch.nn
        model = nn.LSTM(64, 256)
        x = torch.randn(64, 32, 64)

        def call():
            model.zero_grad(set_to_none=True)
            out, _ = model(x)
            out.pow(2).mean().backward()

        return call, 1, "ms"

    yield "W5", "lstm", "fwd+bwd", lstm

    def train_step(model, opt, loss):
        def call():
            opt.zero_grad()
            loss(model).backward()
            opt.step()

        return call, 1, "steps"

    def cnn_loss():
        x, y = torch.randn(32, 3, 32, 32), torch.arange(32) % 10
        return lambda m: F.cross_entropy(m(x), y)

    def lstm_loss():
        x = torch.randn(64, 32, 64)
        return lambda m: m(x)[0].pow(2).mean()

    def opacus_step(model, opt, loss, batch_first):
        """Opacus's DP-SGD step: per-sample gradients by its hooks, clipping to C = 1,
        noise sigma = 1 (its default, non-cryptographic generator), expected batch 32."""
        from opacus import GradSampleModule
        from opacus.optimizers import DPOptimizer

        gsm = GradSampleModule(model, batch_first=batch_first)
        dp_opt = DPOptimizer(opt, noise_multiplier=1.0, max_grad_norm=1.0, expected_batch_size=32)
        return train_step(gsm, dp_opt, loss)

    def w11_cnn(private):
        def setup():
            model, opt = make_cnn(torch)
            if private:
                return opacus_step(model, opt, cnn_loss(), True)
            return train_step(model, opt, cnn_loss())
        return setup

    def w11_lstm(private):
        def setup():
            if private:
                from opacus.layers import DPLSTM

                model = DPLSTM(64, 256)
            else:
                model = torch.nn.LSTM(64, 256)
            opt = torch.optim.SGD(model.parameters(), lr=0.01)
            if private:
                return opacus_step(model, opt, lstm_loss(), False)
            return train_step(model, opt, lstm_loss())
        return setup

    yield "W11", "cnn", "step_b32", w11_cnn(False)
    yield "W11", "lstm", "step", w11_lstm(False)
    if have_opacus():
        yield "W11", "cnn", "dp_step_b32", w11_cnn(True)
        yield "W11", "lstm", "dp_step", w11_lstm(True)
    else:
        print("torch: opacus is not installed: no W11 dp_step rows", file=sys.stderr)

    def transformer_step():
        nn = torch.nn
        layer = nn.TransformerEncoderLayer(256, 8, dim_feedforward=1024, dropout=0.0, batch_first=True)
        opt = torch.optim.AdamW(layer.parameters(), lr=1e-4)
        x = torch.randn(16, 128, 256)

        def call():
            opt.zero_grad()
            layer(x).pow(2).mean().backward()
            opt.step()

        return call, 1, "ms"

    yield "W6", "transformer", "adamw_step", transformer_step

    def elementwise(op):
        def setup():
            n = ELEMENTWISE_LEN
            a, b = torch.randn(n), torch.randn(n)
            if op == "add":
                return (lambda: a + b), 3 * 4 * n, "bytes"
            if op == "add_inplace":
                return (lambda: a.add_(b)), 3 * 4 * n, "bytes"
            return (lambda: F.gelu(a)), 2 * 4 * n, "bytes"
        return setup

    for op in ("add", "add_inplace", "gelu"):
        yield "W7", "elementwise", op, elementwise(op)

    def linreg():
        x = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0])
        y = 2 * x
        theta0 = torch.zeros((), requires_grad=True)
        theta1 = torch.zeros((), requires_grad=True)

        def call():
            nonlocal theta0, theta1  # `-=` rebinds the names (in place for tensors)
            for _ in range(LINREG_STEPS):
                loss = ((theta0 + theta1 * x - y) ** 2).mean()
                loss.backward()
                with torch.no_grad():
                    theta0 -= 0.01 * theta0.grad
                    theta1 -= 0.01 * theta1.grad
                theta0.grad.zero_()
                theta1.grad.zero_()

        return call, LINREG_STEPS, "steps"

    def small_op():
        a = torch.randn(1, requires_grad=True)
        b = torch.randn(1)
        ones = torch.ones(1)

        def call():
            y = a * b
            y.backward(ones)

        return call, 1, "steps"

    yield "W8", "autograd", "linreg", linreg
    yield "W8", "autograd", "small_op", small_op

    def softmax():
        x = torch.randn(*SOFTMAX_SHAPE)
        return (lambda: torch.softmax(x, dim=-1)), 2 * 4 * x.numel(), "bytes"

    yield "W9", "softmax", "x".join(map(str, SOFTMAX_SHAPE)), softmax

    def layer_norm():
        x = torch.randn(*SOFTMAX_SHAPE)
        w, b = torch.ones(SOFTMAX_SHAPE[1]), torch.zeros(SOFTMAX_SHAPE[1])
        return (lambda: F.layer_norm(x, (SOFTMAX_SHAPE[1],), w, b)), 2 * 4 * x.numel(), "bytes"

    yield "W9", "layer_norm", "x".join(map(str, SOFTMAX_SHAPE)), layer_norm


def have_opacus():
    try:
        import opacus  # noqa: F401
    except ImportError:
        return False
    return True


def rss_mb():
    """(current, peak) resident memory of this process in MB, from /proc/self/status."""
    fields = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            fields[key] = value
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def peak_rss(bench_id, setup, calls):
    """Runs a workload `calls` times; its memory before the first call and at the peak."""
    before, _ = rss_mb()
    call, _, _ = setup()
    after_setup, _ = rss_mb()
    for _ in range(calls):
        call()
    _, peak = rss_mb()
    print(f"torch {bench_id}: rss {before:.0f} MB after import, {after_setup:.0f} MB after "
          f"setup, peak {peak:.0f} MB over {calls} calls", file=sys.stderr, flush=True)
    return {"bench_id": bench_id, "rss_after_import_mb": before,
            "rss_after_setup_mb": after_setup, "peak_rss_mb": peak, "calls": calls}


def to_unit(count, kind, median_s):
    """(throughput, unit) the way xtask computes it for the Rust side."""
    if kind == "flops":
        return count / median_s / 1e9, "GFLOP/s"
    if kind == "bytes":
        return count / median_s / 1e9, "GB/s"
    if kind == "ms":
        return median_s * 1e3, "ms"
    return median_s / count * 1e6, "us/step"


def main():
    args = parse_args()
    import torch  # after argument parsing, so --help works without torch

    torch.set_num_threads(args.threads)
    torch.set_num_interop_threads(1)
    torch.manual_seed(0)

    results = []
    for workload, name, param, setup in workloads(torch):
        bench_id = f"{workload}_{name}/torch/{param}"
        if not matches(args.filter, workload, bench_id):
            continue
        if args.list:
            print(bench_id)
            continue
        if args.peak_rss:
            results.append(peak_rss(bench_id, setup, args.peak_rss))
            continue
        call, count, kind = setup()
        median_s = measure(call, args.min_time, args.samples)
        throughput, unit = to_unit(count, kind, median_s)
        del call
        gc.collect()
        print(f"torch {bench_id}: median {median_s * 1e3:.4f} ms, {throughput:.4g} {unit}",
              file=sys.stderr, flush=True)
        results.append({
            "workload": workload,
            "variant": f"{name} {param}",
            "impl": "torch",
            "median_s": median_s,
            "throughput": throughput,
            "unit": unit,
        })
    if not args.list and not args.peak_rss:
        results.extend(ddp_rows(args))
    if not args.list:
        json.dump(results, sys.stdout, indent=1)
        print()


if __name__ == "__main__":
    main()
