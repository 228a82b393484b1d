"""Runs every benchmark and writes one markdown report (the tables in BUILD_NOTES.md).

    python -m benchmarks.run [--output reports/benchmarks.md] [--only resnet,penalties,...]
        [--image_size 64] [--batch_size 32] [--steps 10]

The `device` section (issue 17, item 4) runs only where TensorFlow sees a GPU; its own flags
start with `--device_`. The JAX training step (issue 24) is its own program, since it must run
without TensorFlow: `KERAS_BACKEND=jax python -m benchmarks.jax_step` (benchmarks/jax_step.py).
"""
import argparse
import contextlib
import gc
import io
import os
import sys
import time

import keras
import tensorflow as tf

from benchmarks import (device_grid, efficientnet_throughput, input_pipeline, jpeg_pipeline,
                        kernels, memory, penalty_overhead, precision, randaugment_throughput,
                        resnet_throughput)
from benchmarks.timing import machine, matmul_peak_gflops

def resnet_section(args, peak):
    print(f"### Training step, batch {args.batch_size}, ResNet-50 at {args.image_size} px "
          f"(best of 3 alternating rounds, median of {args.steps} steps each)\n")
    print("| model | train GFLOP/image | images/s | GFLOP/s | % of matmul peak | ratio |")
    print("|---|---:|---:|---:|---:|---:|")
    for label, flops, rate, gflops, ratio in resnet_throughput.rows(
            args.image_size, args.batch_size, args.steps):
        print(f"| {label} | {flops:.2f} | {rate:.1f} | {gflops:.0f} | {100 * gflops / peak:.0f}% "
              f"| {ratio:.2f}x |")


def efficientnet_section(args, peak):
    print(f"\n### Training step, batch {args.batch_size}, EfficientNet-B0 at {args.image_size} px\n")
    print("| model | train GFLOP/image | images/s | ratio |")
    print("|---|---:|---:|---:|")
    for label, flops, rate, ratio in efficientnet_throughput.rows(
            args.image_size, args.batch_size, args.steps):
        print(f"| {label} | {flops:.2f} | {rate:.1f} | {ratio:.2f}x |")


def randaugment_section(args, peak):
    print("\n### RandAugment N=2 in tf.data, images/s (ours vs keras.layers.RandAugment; best of 3 "
          "alternating rounds)\n")
    print("| image size | M | keras.layers.RandAugment | bnreg reference | bnreg corrected | "
          "ratio (reference) |")
    print("|---:|---:|---:|---:|---:|---:|")
    for size, magnitude, theirs, reference, corrected, ratio in randaugment_throughput.rows():
        print(f"| {size} | {magnitude} | {theirs:.0f} | {reference:.0f} | {corrected:.0f} "
              f"| {ratio:.1f}x |")


def penalties_section(args, peak):
    print(f"\n### Penalty overhead on a training step, batch {args.batch_size}\n")
    print("| model | penalty | images/s | slower than without |")
    print("|---|---|---:|---:|")
    for model, label, rate, slowdown in penalty_overhead.rows(args.image_size, args.batch_size,
                                                              args.steps):
        print(f"| {model} | {label} | {rate:.1f} | {100 * slowdown:+.1f}% |")


def precision_section(args, peak):
    print(f"\n### Training step, batch {args.batch_size}: float32 vs mixed_bfloat16, images/s\n")
    print("| model | float32 | mixed_bfloat16 | speed-up |")
    print("|---|---:|---:|---:|")
    for label, full, half, speedup in precision.rows(args.image_size, args.batch_size, args.steps):
        print(f"| {label} | {full:.1f} | {half:.1f} | {speedup:.2f}x |")
    curves = precision.loss_curves(batch_size=args.batch_size)
    full, half = curves["float32"], curves["mixed_bfloat16"]
    print("\nWRN-16-4 training loss, same init and batches (step: float32 / mixed_bfloat16): "
          + ", ".join(f"{step}: {full[step]:.3f} / {half[step]:.3f}" for step in (0, 4, 9, 19, 29)))


def pipeline_section(args, peak):
    print("\n### Input pipeline vs model consumption, images/s\n")
    print("| pipeline | images/s | consumer | images/s | pipeline / consumer |")
    print("|---|---:|---|---:|---:|")
    for name, rate, consumer, consumed, ratio in input_pipeline.rows(args.batch_size):
        print(f"| {name} | {rate:.0f} | {consumer} | {consumed:.1f} | {ratio:.1f}x |")


def jpeg_section(args, peak):
    jpeg_pipeline.print_table(args)


def memory_section(args, peak):
    print(f"\n### Peak resident memory of a short training run, batch {args.batch_size}\n")
    print("| run | peak RSS (MB) |")
    print("|---|---:|")
    for label, megabytes in memory.rows(args.batch_size):
        print(f"| {label} | {megabytes:.0f} |")


def kernels_section(args, peak):
    print("\n### Issue 17's kernels against what they replace (best of 3 rounds)\n")
    print("| KL, activation | moments: fused (ms) | shifted sums (ms) | speed-up | gradient: "
          "fused affine (ms) | multiply-add (ms) | speed-up |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for shape, fused, shifted, affine, multiply_add in kernels.moment_rows():
        print(f"| {list(shape)} | {fused:.2f} | {shifted:.2f} | {shifted / fused:.2f}x | "
              f"{affine:.2f} | {multiply_add:.2f} | {multiply_add / affine:.2f}x |")
    print(f"\n| pointwise conv, fwd + both grads, batch {args.batch_size} | oneDNN conv GFLOP/s "
          "| matmul GFLOP/s | speed-up |")
    print("|---|---:|---:|---:|")
    for side, cin, cout, conv, matmul in kernels.pointwise_rows(args.batch_size):
        print(f"| {side}x{side}, {cin} -> {cout} | {conv:.0f} | {matmul:.0f} | "
              f"{matmul / conv:.2f}x |")
    print(f"\n| ResNet-50 training step at {args.image_size} px, optimizer | images/s |")
    print("|---|---:|")
    for label, rate in kernels.sgd_rows(args.image_size, args.batch_size, args.steps):
        print(f"| {label} | {rate:.1f} |")


def device_section(args, peak):
    name = device_grid.device_name()
    if name is None and not args.device_grid_on_cpu:
        print("\n### Accelerator grid (issue 17, item 4)\n\nNo GPU in this process: not run "
              "(on a CPU see the precision section; `--device_grid_on_cpu` runs it anyway).")
        return
    mixed = device_grid.mixed_policy()
    auto = device_grid.auto_choice()
    print(f"\n### Accelerator grid on {name or 'CPU'}: training step, batch "
          f"{args.device_batch_size}, float32 / {mixed} x graph / XLA (best of "
          f"{device_grid.ROUNDS} alternating rounds, median of {args.steps} steps each)\n")
    print(f"`--precision=auto --compilation=auto` here: {auto[0]}, "
          f"{'xla' if auto[1] else 'graph'}. Correct: the first {device_grid.CHECK_STEPS} losses "
          f"on one batch finite, within {device_grid.TOLERANCE:.0%} of float32 graph's, and "
          f"falling by at least {device_grid.MIN_DROP:.0%} of what float32 graph's fall.\n")
    print("| model | precision | compilation | images/s | vs float32 graph | max loss difference "
          "| loss drop vs float32 graph | correct |")
    print("|---|---|---|---:|---:|---:|---:|---|")
    verdicts = []
    for key in [f for f in args.device_families.split(",") if f]:
        family = device_grid.FAMILIES[key]
        size = args.device_image_size or family.image_size
        try:
            cells = device_grid.family_cells(family, args.device_batch_size, args.steps,
                                             image_size=size)
        except tf.errors.ResourceExhaustedError:
            print(f"| {family.label} ({size} px) | out of memory at batch "
                  f"{args.device_batch_size}: rerun it with a smaller --device_batch_size "
                  f"| | | | | | |")
            continue
        finally:
            keras.backend.clear_session()
            gc.collect()
        for start in range(0, len(cells), 4):
            group = cells[start:start + 4]
            for cell in group:
                print(f"| {cell.model} ({size} px) | {cell.precision} | {cell.compilation} "
                      f"| {cell.images_per_second:.1f} "
                      f"| {cell.images_per_second / group[0].images_per_second:.2f}x "
                      f"| {cell.max_loss_difference:.2e} | {cell.drop_ratio:.2f} "
                      f"| {'yes' if cell.correct else 'NO'} |")
        verdicts.append((family, device_grid.verdict(cells[:4], auto)))
    print()
    for family, (chosen, best, ratio) in verdicts:
        where = f"auto's cell ({chosen.precision}, {chosen.compilation})"
        if not chosen.correct:
            print(f"- {family.label}: {where} is NOT correct (see its row).")
        elif best is chosen:
            print(f"- {family.label}: {where} is the fastest correct one "
                  f"({chosen.images_per_second:.0f} images/s).")
        else:
            print(f"- {family.label}: {where} runs {ratio:.2f}x the fastest correct one "
                  f"({best.precision}, {best.compilation}, {best.images_per_second:.0f} images/s).")


SECTIONS = {"resnet": resnet_section, "efficientnet": efficientnet_section,
            "randaugment": randaugment_section, "penalties": penalties_section,
            "precision": precision_section, "pipeline": pipeline_section, "jpeg": jpeg_section,
            "memory": memory_section, "kernels": kernels_section, "device": device_section}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image_size", type=int, default=64)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--only", default=",".join(SECTIONS),
                        help=f"comma-separated subset of {tuple(SECTIONS)}")
    parser.add_argument("--device_families", default=",".join(device_grid.FAMILIES),
                        help=f"device section: comma-separated subset of "
                             f"{tuple(device_grid.FAMILIES)}")
    parser.add_argument("--device_batch_size", type=int, default=128,
                        help="device section: batch size (per step, one GPU)")
    parser.add_argument("--device_image_size", type=int, default=0,
                        help="device section: input resolution (0: each family's own, 224 or 32)")
    parser.add_argument("--device_grid_on_cpu", action="store_true",
                        help="run the device section without a GPU (a smoke test; slow with XLA)")
    parser.add_argument("--output", default="reports/benchmarks.md",
                        help="markdown file the tables are written to (also printed)")
    args = parser.parse_args()
    chosen = [s for s in args.only.split(",") if s]
    unknown = sorted(set(chosen) - set(SECTIONS))
    if unknown:
        parser.error(f"--only: unknown section(s) {unknown}; expected a subset of "
                     f"{tuple(SECTIONS)}")
    families = sorted({f for f in args.device_families.split(",") if f} - set(device_grid.FAMILIES))
    if families:
        parser.error(f"--device_families: unknown {families}; expected a subset of "
                     f"{tuple(device_grid.FAMILIES)}")
    buffer = io.StringIO()
    tee = _Tee(sys.stdout, buffer)
    start = time.time()
    with contextlib.redirect_stdout(tee):
        peak = matmul_peak_gflops()
        print(f"Machine: {machine()}; float32 matmul peak {peak:.0f} GFLOP/s")
        print(f"Command: python -m benchmarks.run {' '.join(sys.argv[1:])}".rstrip())
        for section in chosen:
            SECTIONS[section](args, peak)
            _write(args.output, buffer)  # what has finished survives a later section's crash
        print(f"\n({(time.time() - start) / 60:.1f} min)")
    _write(args.output, buffer)


def _write(path, buffer):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        f.write(buffer.getvalue())


class _Tee(io.TextIOBase):
    def __init__(self, *streams):
        self.streams = streams

    def write(self, text):
        for stream in self.streams:
            stream.write(text)
            stream.flush()
        return len(text)


if __name__ == "__main__":
    main()
