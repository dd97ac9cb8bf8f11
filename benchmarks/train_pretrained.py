"""Train the pretrained models that ship with nanoedx and register them (pretrained.json).

    python benchmarks/train_pretrained.py --data nanoedx-standard-0.1.2.h5 --model unet-small
    python benchmarks/train_pretrained.py --data nanoedx-standard-0.2.0.h5 --model unet-joint \
        --stage --lr 3e-4 --epochs 8   # a further stage from the registered weights

Each model's recipe is below; the weights are stored as float16 in nanoedx_models/denoisers/weights/ and
their SHA-256 written to nanoedx_models/denoisers/pretrained.json. Training on 2 CPU cores is far shorter
than the paper's 100 epochs on a GPU: the recipes say how many maps each model saw.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from nanoedx_dataset.store.files import sha256
from nanoedx_models import load_model, save_model, train

ROOT = Path(__file__).resolve().parents[1] / "nanoedx_models" / "denoisers"
RECIPES = {
    "unet-small": dict(preset="small", counts=1000.0, background=100.0, per_structure=False,
                       epochs=12, maps_per_epoch=640, batch_size=16,
                       about="standard preset, on-the-fly noise at 1000 counts + 100 background"),
    "unet-multidose": dict(preset="small", counts=(100.0, 10000.0), background_fraction=0.1,
                           per_structure=False, epochs=12, maps_per_epoch=640, batch_size=16,
                           about="standard preset, on-the-fly noise, counts log-uniform in "
                                 "1e2..1e4, background 10 % of the counts"),
    # robust to dose and field: standard + fields presets, 1e-3..1 counts per pixel (16..16384
    # per 128^2 map), background 2-60 % of the counts, crops of 64-128 px; from unet-multidose
    "unet-fields": dict(preset="small", counts=(16.0, 16384.0), background_fraction=(0.02, 0.6),
                        per_structure=False, epochs=8, maps_per_epoch=640, batch_size=16,
                        crops=(64, 96, 128), init="unet-multidose",
                        about="standard + fields presets, on-the-fly noise, counts log-uniform "
                              "in 16..16384 per 128^2 map (1e-3..1 per pixel), background "
                              "log-uniform 2-60 % of the counts, random crops of 64/96/128 px, "
                              "fine-tuned from unet-multidose"),
}
# Context models (issue: the HAADF image, the other elements and the neighbouring tilts beside
# each map), on a release with HAADF images: fine-tuned from unet-small, whose first
# convolution's weights on the context channels start at zero (training starts at its output).
for _name, _context in {"unet-haadf": ("haadf",), "unet-joint": ("elements", "tilts"),
                        "unet-context": ("haadf", "elements", "tilts")}.items():
    RECIPES[_name] = dict(preset="small", counts=1000.0, background=100.0, per_structure=False,
                          epochs=8, maps_per_epoch=640, batch_size=16, init="unet-small",
                          context=_context,
                          about=f"standard preset with HAADF images, on-the-fly noise at 1000 "
                                f"counts + 100 background, context {'+'.join(_context)}, "
                                "fine-tuned from unet-small")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, nargs="+", help="database files (several: "
                    "their maps together)")
    ap.add_argument("--model", choices=RECIPES, required=True)
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--epochs", type=int, help="train this many epochs (default: the recipe's)")
    ap.add_argument("--threads", type=int, default=2, help="torch threads")
    ap.add_argument("--stage", action="store_true",
                    help="a further training stage: start from the model's registered weights "
                         "(its map-steps and schedule carry on in the metadata)")
    ap.add_argument("--lr", type=float, help="learning rate (default: the recipe's, 1e-3)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    recipe = dict(RECIPES[args.model])
    about = recipe.pop("about")
    if args.epochs:
        recipe["epochs"] = args.epochs
    if args.lr:
        recipe["lr"] = args.lr
    if args.stage:
        prior = json.loads((ROOT / "pretrained.json").read_text())[args.model]
        recipe["init"] = args.model
        about = (f"{prior['recipe']}; then a further stage at learning rate "
                 f"{recipe.get('lr', 1e-3):g}")
    work = ROOT / "weights" / f"{args.model}.train.pt"  # git-ignored working copy
    t0 = time.time()
    train(args.data if len(args.data) > 1 else args.data[0], work, seed=0, resume=args.resume,
          **recipe)
    seconds = time.time() - t0
    model, meta = load_model(work)
    if all("seconds" in h for h in meta["history"]):  # its epochs', also across --resume
        seconds = sum(h["seconds"] for h in meta["history"])
    if args.stage:  # the model's training time over all its stages
        seconds += prior.get("train_seconds") or 0
    meta.update({"recipe": about, "train_seconds": round(seconds), "name": args.model})
    final = ROOT / "weights" / f"{args.model}.pt"
    save_model(final, model, meta, half=True)
    reg_path = ROOT / "pretrained.json"
    reg = json.loads(reg_path.read_text())
    reg[args.model] = {"file": final.name, "sha256": "sha256:" + sha256(final), "embedded": True,
                       "preset": recipe["preset"], "recipe": about,
                       "val_nmae": meta["val_nmae"], "best_epoch": meta["best_epoch"],
                       "map_steps": meta["history"][-1]["map_steps"],
                       "schedule": meta["schedule"], "train_seconds": round(seconds)}
    if meta.get("context"):
        reg[args.model]["context"] = meta["context"]
    reg_path.write_text(json.dumps(reg, indent=2, sort_keys=True) + "\n")
    print(json.dumps(reg[args.model], indent=2))


if __name__ == "__main__":
    main()
