"""How fast the in-memory datasets deliver batches (no training), against what training consumes.

In-memory datasets (digits, MNIST, Fashion-MNIST, CIFAR) are uint8 tensors on the training device; a batch
is one index operation plus batched augmentation on that device, so no DataLoader and no host copy is in
the loop. This prints batches/s and images/s of ``Split.batches`` for Fashion-MNIST (if installed: hflip)
and for a CIFAR-shaped split (random uint8 images, the full CIFAR augmentation), and checks the device.

    python benchmarks/data_throughput.py --batch-size 128 --batches 50
"""
import argparse
import time

import torch

from asge.data import TensorSplit, load_data


def measure(split, batch_size: int, batches: int, device) -> float:
    it = split.batches(batch_size, shuffle=True, augment=True, seed=0, device=device)
    x, y = next(it)
    assert x.device.type == torch.device(device).type and split.images.device.type == x.device.type
    t = time.perf_counter()
    n = 0
    for i, (x, y) in enumerate(it):
        n += x.shape[0]
        if i + 1 == batches:
            break
    if x.device.type == "cuda":
        torch.cuda.synchronize()
    return n / (time.perf_counter() - t)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--batches", type=int, default=50)
    p.add_argument("--device", default="cpu")
    a = p.parse_args()
    rows = []
    try:
        fm = load_data("fashion-mnist", device=a.device)
        rows.append(("fashion-mnist 32px, hflip", measure(fm.train, a.batch_size, a.batches, a.device)))
    except Exception as e:  # the Debian package may be missing
        print(f"fashion-mnist skipped: {e}")
    g = torch.Generator().manual_seed(0)
    cifar = TensorSplit(torch.randint(0, 256, (45000, 3, 32, 32), dtype=torch.uint8, generator=g),
                        torch.randint(0, 10, (45000,), generator=g), augmentation="cifar", device=a.device)
    rows.append(("cifar-shaped 32px, crop+flip+jitter+gray", measure(cifar, a.batch_size, a.batches, a.device)))
    print(f"\nbatch {a.batch_size}, {a.batches} batches, device {a.device}, {torch.get_num_threads()} threads")
    print(f"{'split':<42}{'images/s':>12}")
    for name, ips in rows:
        print(f"{name:<42}{ips:>12.0f}")


if __name__ == "__main__":
    main()
