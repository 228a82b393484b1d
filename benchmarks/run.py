"""Runs the benchmarks and prints markdown tables (paste into BUILD_NOTES.md).

    python -m benchmarks.run [--image_size 64] [--batch_size 32] [--steps 10] [--only resnet,...]
"""
import argparse

from benchmarks import efficientnet_throughput, randaugment_throughput, resnet_throughput
from benchmarks.timing import machine, matmul_peak_gflops

SECTIONS = ("resnet", "efficientnet", "randaugment")


def resnet_section(args, peak):
    print(f"### Training step, batch {args.batch_size}, ResNet-50 at {args.image_size} px "
          f"(median of {args.steps} steps after 3 warm-up)\n")
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
    print("\n### RandAugment N=2 in tf.data, images/s (ours vs keras.layers.RandAugment)\n")
    print("| image size | M | keras.layers.RandAugment | bnreg randaugment | ratio |")
    print("|---:|---:|---:|---:|---:|")
    for size, magnitude, theirs, ours, ratio in randaugment_throughput.rows():
        print(f"| {size} | {magnitude} | {theirs:.0f} | {ours:.0f} | {ratio:.1f}x |")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image_size", type=int, default=64)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--only", default=",".join(SECTIONS),
                        help=f"comma-separated subset of {SECTIONS}")
    args = parser.parse_args()
    chosen = [s for s in args.only.split(",") if s]
    unknown = sorted(set(chosen) - set(SECTIONS))
    if unknown:
        parser.error(f"--only: unknown section(s) {unknown}; expected a subset of {SECTIONS}")
    peak = matmul_peak_gflops()
    print(f"Machine: {machine()}; float32 matmul peak {peak:.0f} GFLOP/s\n")
    for section in chosen:
        globals()[f"{section}_section"](args, peak)


if __name__ == "__main__":
    main()
