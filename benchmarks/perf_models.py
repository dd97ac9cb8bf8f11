"""Time U-net inference and training on this machine's CPU; write perf_models.md.

    python benchmarks/perf_models.py [--threads 2] [--repeats 10]

Inference: milliseconds per 256x256 map (batch of 1, float32, torch.no_grad) per preset, median
of repeats after a warm-up. Training: seconds per epoch of 700 maps of 128x128 (the paper's
training split), batch 8, Adam, from the median time of a few steps. A GPU is timed too when
one is present.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

from nanoedx_dataset import __version__
from nanoedx_models.denoisers.unet import PRESETS, UNet

RESULTS = Path(__file__).parent / "results"


def time_inference(net: UNet, device: str, repeats: int, size: int = 256) -> float:
    x = torch.rand(1, 1, size, size, device=device)
    times = []
    with torch.no_grad():
        for k in range(repeats + 2):
            if device == "cuda":
                torch.cuda.synchronize()
            t = time.perf_counter()
            net(x)
            if device == "cuda":
                torch.cuda.synchronize()
            if k >= 2:
                times.append(time.perf_counter() - t)
    return float(np.median(times)) * 1e3


def time_training(net: UNet, device: str, steps: int, batch: int = 8, size: int = 128) -> float:
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    x = torch.rand(batch, 1, size, size, device=device)
    y = torch.rand(batch, 1, size, size, device=device)
    times = []
    for k in range(steps + 1):
        t = time.perf_counter()
        opt.zero_grad()
        torch.nn.functional.l1_loss(net(x), y).backward()
        opt.step()
        if device == "cuda":
            torch.cuda.synchronize()
        if k:
            times.append(time.perf_counter() - t)
    return float(np.median(times)) * 700 / batch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--out", default=str(RESULTS / "perf_models.md"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    rows = []
    for name, cfg in PRESETS.items():
        torch.manual_seed(0)
        for dev in devices:
            net = UNet(**cfg).to(dev).eval()
            ms = time_inference(net, dev, args.repeats)
            steps = 3 if name == "paper" and dev == "cpu" else 8
            epoch = time_training(net.train(), dev, steps)
            params = sum(p.numel() for p in net.parameters())
            rows.append((name, cfg, dev, params, ms, epoch))
            print(rows[-1])
    paper_cpu = next(r[4] for r in rows if r[0] == "paper" and r[2] == "cpu")
    lines = ["# U-net speed", "",
             f"`python benchmarks/perf_models.py --threads {args.threads}` on {platform.machine()} "
             f"({os.cpu_count()} cores), torch {torch.__version__} with {args.threads} threads, "
             f"nanoedx {__version__}, {time.strftime('%Y-%m-%d')}.", "",
             "| preset | depth, base | device | parameters | ms per 256² map | speed-up vs paper "
             "| s per epoch (700 maps 128², batch 8) |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for name, cfg, dev, params, ms, epoch in rows:
        lines.append(f"| {name} | {cfg['depth']}, {cfg['base']} | {dev} | {params / 1e6:.2f} M | "
                     f"{ms:.1f} | {paper_cpu / ms:.1f}× | {epoch:.0f} |")
    lines += ["", "The paper: 300 ± 20 ms per 256² map on an 8-core i7-10700 CPU, 25 ms on an "
              "RTX 2060 (paper-size U-net)."]
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
