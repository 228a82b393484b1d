"""Runs the benchmarks and prints markdown tables (paste into BUILD_NOTES.md).

    python -m benchmarks.run [--image_size 64] [--batch_size 32] [--steps 10]
"""
import argparse

from benchmarks import resnet_throughput
from benchmarks.timing import machine, matmul_peak_gflops


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image_size", type=int, default=64)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args()
    peak = matmul_peak_gflops()
    print(f"Machine: {machine()}; float32 matmul peak {peak:.0f} GFLOP/s\n")
    print(f"### Training step, batch {args.batch_size}, ResNet-50 at {args.image_size} px "
          f"(median of {args.steps} steps after 3 warm-up)\n")
    print("| model | train GFLOP/image | images/s | GFLOP/s | % of matmul peak | ratio |")
    print("|---|---:|---:|---:|---:|---:|")
    for label, flops, rate, gflops, ratio in resnet_throughput.rows(
            args.image_size, args.batch_size, args.steps):
        print(f"| {label} | {flops:.2f} | {rate:.1f} | {gflops:.0f} | {100 * gflops / peak:.0f}% "
              f"| {ratio:.2f}x |")


if __name__ == "__main__":
    main()
