#!/usr/bin/env python3
"""The peer `slimscope bench MODEL --recipe R` is compared with for classifiers:
onnxruntime serving the same .onnx files (slimscope's float and QDQ exports, written
with `slimscope apply … -o X.onnx`), each in a fresh process as slimscope's children
are: latency at batch 1 (p50/p99, one intra-op thread, as tract runs one request),
throughput at batch 1000 (two threads), and the process's peak RSS.

    target/fixtures/venv/bin/python benches/onnx_speed.py A.onnx [B.onnx …] [--seconds 1]

Inputs are seeded normal values of the graph's input shape (speed does not depend on
them). Needs onnxruntime and numpy (the fixture venv has both).
"""
import json
import subprocess
import sys
import time


def serve(path, seconds):
    import resource

    import numpy as np
    import onnxruntime as ort

    def session(threads):
        o = ort.SessionOptions()
        o.intra_op_num_threads = threads
        o.inter_op_num_threads = 1
        return ort.InferenceSession(path, o, providers=["CPUExecutionProvider"])

    single, batched = session(1), session(2)
    inp = single.get_inputs()[0]
    shape = [d if isinstance(d, int) else 1 for d in inp.shape[1:]]
    rng = np.random.default_rng(0)
    x = rng.standard_normal([1000] + shape).astype(np.float32)

    def repeat(f, warmup, min_runs):
        for _ in range(warmup):
            f()
        times, start = [], time.perf_counter()
        while len(times) < min_runs or time.perf_counter() - start < seconds:
            t = time.perf_counter()
            f()
            times.append(time.perf_counter() - t)
        return times

    times = sorted(repeat(lambda: single.run(None, {inp.name: x[:1]}), 10, 100))
    at = lambda q: times[round((len(times) - 1) * q)] * 1e3
    batch = repeat(lambda: batched.run(None, {inp.name: x}), 1, 5)
    return {
        "p50_ms": at(0.5),
        "p99_ms": at(0.99),
        "samples_per_second": 1000 * len(batch) / sum(batch),
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "onnxruntime": ort.__version__,
    }


def main():
    args = sys.argv[1:]
    seconds = 1.0
    if "--seconds" in args:
        i = args.index("--seconds")
        seconds = float(args[i + 1])
        del args[i : i + 2]
    if args and args[0] == "--serve":
        print(json.dumps(serve(args[1], seconds)))
        return
    print(f"{'file':<40} {'p50 ms':>8} {'p99 ms':>8} {'samples/s (1000)':>17} {'peak RSS':>10}")
    for path in args:
        out = subprocess.run([sys.executable, __file__, "--serve", path, "--seconds", str(seconds)],
                             capture_output=True, text=True)
        if out.returncode != 0:
            print(f"{path:<40} onnxruntime cannot serve it: {out.stderr.strip().splitlines()[-1]}")
            continue
        r = json.loads(out.stdout)
        print(f"{path:<40} {r['p50_ms']:>8.3f} {r['p99_ms']:>8.3f} {r['samples_per_second']:>17.0f} "
              f"{r['peak_rss_bytes'] / 1e6:>8.2f} MB")


if __name__ == "__main__":
    main()
