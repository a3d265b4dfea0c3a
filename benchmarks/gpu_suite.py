"""One-GPU suite: exact retrieval at scale, an IRRA training step under AMP, host syncs per step.

Prints, on one GPU, in a few minutes:

1. ``evaluate`` and ``topk_search`` (k = 10) at 100,000 queries x 1,000,000 gallery items,
   D = 512, in float16 and float32 (sizes are cut down, and the table says so, when the
   features and the score blocks would not fit the free GPU memory);
2. a training step of textreid's IRRA method (ViT-B/16 at 384x128, batch 64: SDM + ID + MLM)
   through the trainer's own step (autocast, GradScaler, skipped-step counting) in float32,
   bf16 and fp16, as steps/s and peak memory, beside open_clip's ViT-B-16 forward + backward
   + AdamW with the CLIP contrastive loss (skipped with a note when open_clip is missing);
3. host synchronisations per training step, counted as the warnings of
   ``torch.cuda.set_sync_debug_mode("warn")``.

Run by hand::

    python benchmarks/gpu_suite.py              # on a machine with a CUDA GPU
    python benchmarks/gpu_suite.py --smoke      # same code on the CPU at tiny sizes (< 60 s)

``--smoke`` exists to check the script without a GPU; its numbers mean nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_step import SIZES, _build

from textreid.methods.irra import IRRA_MASK_TOKEN_ID, IRRAMethod
from textreid.retrieval import evaluate, topk_search
from textreid.training import Trainer, TrainerConfig


@dataclass(frozen=True)
class Sizes:
    queries: int
    gallery: int
    dim: int
    model: str
    image_size: tuple[int, int]
    batch: int
    steps: int
    warmup: int
    classes: int


FULL = Sizes(100_000, 1_000_000, 512, "ViT-B/16", (384, 128), 64, 10, 3, 11_003)
SMOKE = Sizes(300, 2_000, 64, "tiny", (32, 16), 2, 1, 1, 16)


def machine_line(device: torch.device) -> str:
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        free, total = torch.cuda.mem_get_info(device)
        return (
            f"GPU {name} ({total / 2**30:.0f} GiB, {free / 2**30:.0f} GiB free), "
            f"torch {torch.__version__}, CUDA {torch.version.cuda}"
        )
    return f"CPU (smoke run), torch {torch.__version__}, {torch.get_num_threads()} threads"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn: Callable[[], object], device: torch.device, repeats: int) -> float:
    fn()  # warm-up: kernels, allocator
    _sync(device)
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    _sync(device)
    return (time.perf_counter() - start) / repeats


def _fit_gallery(sizes: Sizes, device: torch.device) -> tuple[int, str]:
    """The gallery size that fits: float32 features of both sets, three times over."""
    if device.type != "cuda":
        return sizes.gallery, ""
    free, _ = torch.cuda.mem_get_info(device)
    per_item = sizes.dim * 4 * 3
    budget = int(0.6 * free) - sizes.queries * sizes.dim * 4
    if sizes.gallery * per_item <= budget:
        return sizes.gallery, ""
    cut = max(budget // per_item, 1000)
    return cut, f" (gallery cut from {sizes.gallery:,} to {cut:,} to fit {free / 2**30:.0f} GiB)"


def _retrieval_case(
    nq: int, ng: int, dim: int, dtype: torch.dtype, device: torch.device
) -> list[str]:
    g = torch.Generator(device=device).manual_seed(0)
    query = F.normalize(torch.randn(nq, dim, device=device, generator=g), dim=1).to(dtype)
    gallery = F.normalize(torch.randn(ng, dim, device=device, generator=g), dim=1).to(dtype)
    gallery_pids = torch.randint(0, ng // 4 + 1, (ng,), device=device, generator=g)
    query_pids = gallery_pids[torch.randint(0, ng, (nq,), device=device, generator=g)]
    cases: dict[str, Callable[[], object]] = {
        "evaluate": lambda: evaluate(
            query, gallery, query_pids=query_pids, gallery_pids=gallery_pids
        ),
        "topk_search": lambda: topk_search(query, gallery, 10, normalize=False),
    }
    rows = []
    for name, fn in cases.items():
        try:
            s = _timed(fn, device, repeats=1)
            rows.append(f"{name:12s} | {str(dtype)[6:]:8s} | {s:8.3f} | {nq / s:10,.0f}")
        except (RuntimeError, ValueError, TypeError) as e:  # report, keep the table going
            rows.append(f"{name:12s} | {str(dtype)[6:]:8s} | failed: {e}"[:160])
    return rows


def retrieval_rows(sizes: Sizes, device: torch.device) -> list[str]:
    gallery_n, note = _fit_gallery(sizes, device)
    rows = [
        f"retrieval: {sizes.queries:,} queries x {gallery_n:,} gallery, D={sizes.dim}{note}",
        f"{'function':12s} | {'dtype':8s} | {'seconds':>8s} | {'queries/s':>10s}",
    ]
    for dtype in (torch.float16, torch.float32):
        rows += _retrieval_case(sizes.queries, gallery_n, sizes.dim, dtype, device)
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return rows


def _batch(sizes: Sizes, device: torch.device) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1, 49_000, (sizes.batch, 77), generator=g)
    ids[:, 40] = 49_407  # end of text: the largest id, where text pooling reads
    ids[:, 41:] = 0
    return {
        "images": torch.randn(sizes.batch, 3, *sizes.image_size, generator=g),
        "text_ids": ids,
        "pids": torch.randint(0, sizes.classes, (sizes.batch,), generator=g),
    }


@contextlib.contextmanager
def _count_syncs(device: torch.device) -> Iterator[list[int]]:
    """Counts the host synchronisations CUDA reports in the block (none on the CPU)."""
    count = [0]
    if device.type != "cuda":
        yield count
        return
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            yield count
        finally:
            torch.cuda.set_sync_debug_mode(0)
    count[0] = sum("synchroniz" in str(w.message) for w in caught)


def _peak_mib(device: torch.device) -> str:
    if device.type != "cuda":
        return "n/a"
    return f"{torch.cuda.max_memory_allocated(device) / 2**20:,.0f}"


def _step_row(
    name: str, amp: str, step: Callable[[], None], sizes: Sizes, device: torch.device
) -> str:
    """Warm up (which also lets fp16's scale settle), count one step's host syncs, time the
    steps, and format the table row."""
    for _ in range(sizes.warmup):
        step()
    _sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    with _count_syncs(device) as syncs:
        step()
        _sync(device)
    seconds = _timed(step, device, sizes.steps)
    sync_text = f"{syncs[0]}" if device.type == "cuda" else "n/a"
    return f"{name:16s} | {amp:5s} | {1 / seconds:8.2f} | {_peak_mib(device):>9s} | {sync_text:>5s}"


def irra_row(sizes: Sizes, amp: str, device: torch.device, out: Path) -> str:
    torch.manual_seed(0)
    encoder = _build("textreid", sizes.model, sizes.image_size)
    method = IRRAMethod(encoder, sizes.classes, mask_token_id=IRRA_MASK_TOKEN_ID)
    cfg = TrainerConfig(
        epochs=1,
        warmup_epochs=0,
        amp=amp,  # type: ignore[arg-type]
        device=str(device),
        output_dir=str(out / f"irra-{amp}"),
        progress=False,
        tensorboard=False,
    )
    batch = _batch(sizes, device)
    # The trainer's own step: host-to-device copy, autocast, scaler, skipped-step count.
    trainer = Trainer(method, [batch], cfg)
    trainer._skipped_epoch = (
        torch.zeros((), dtype=torch.int64, device=device) if trainer.scaler.is_enabled() else None
    )

    def step() -> None:
        trainer._forward_backward(batch, 1, True)
        trainer._optimizer_step()

    return _step_row("textreid IRRA", amp, step, sizes, device)


def open_clip_row(sizes: Sizes, amp: str, device: torch.device) -> str:
    try:
        model = _build("open_clip", sizes.model, sizes.image_size).to(device).train()
    except ImportError:
        return f"{'open_clip CLIP':16s} | {amp:5s} | skipped: open_clip is not installed"
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
    scaler = torch.amp.GradScaler(device.type, enabled=amp == "fp16")
    batch = {k: v.to(device) for k, v in _batch(sizes, device).items()}
    labels = torch.arange(sizes.batch, device=device)
    dtype = torch.bfloat16 if amp == "bf16" else torch.float16

    def step() -> None:
        with torch.autocast(device.type, dtype=dtype, enabled=amp != "none"):
            v = F.normalize(model.encode_image(batch["images"]), dim=-1)
            t = F.normalize(model.encode_text(batch["text_ids"]), dim=-1)
            logits = model.logit_scale.exp() * v @ t.T
            loss = 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels))
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        opt.zero_grad(set_to_none=True)

    return _step_row("open_clip CLIP", amp, step, sizes, device)


def training_rows(sizes: Sizes, device: torch.device, amps: list[str]) -> None:
    print(
        f"training step: {sizes.model} {sizes.image_size[0]}x{sizes.image_size[1]}, "
        f"batch {sizes.batch}, {sizes.steps} timed steps (syncs: host synchronisations in one)",
        flush=True,
    )
    print(f"{'model':16s} | {'amp':5s} | {'steps/s':>8s} | {'peak MiB':>9s} | {'syncs':>5s}")
    with tempfile.TemporaryDirectory() as tmp:
        for amp in amps:
            print(irra_row(sizes, amp, device, Path(tmp)), flush=True)
            print(open_clip_row(sizes, amp, device), flush=True)
            if device.type == "cuda":
                torch.cuda.empty_cache()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--smoke", action="store_true", help="tiny sizes on the CPU (checks the code)")
    p.add_argument("--skip-retrieval", action="store_true", help="only the training rows")
    p.add_argument(
        "--amp",
        nargs="+",
        choices=["none", "bf16", "fp16"],
        default=["none", "bf16", "fp16"],
        help="precisions of the training rows (default: all three)",
    )
    args = p.parse_args(argv)
    if args.smoke:
        sizes, device = SMOKE, torch.device("cpu")
    elif torch.cuda.is_available():
        sizes, device = FULL, torch.device("cuda", 0)
    else:
        p.error("no CUDA GPU visible; use --smoke to check the script on the CPU")
    assert sizes.model in SIZES
    start = time.perf_counter()
    print(machine_line(device), flush=True)
    if not args.skip_retrieval:
        for row in retrieval_rows(sizes, device):
            print(row, flush=True)
    print(flush=True)
    training_rows(sizes, device, args.amp)
    print(f"\nsuite took {time.perf_counter() - start:.0f} s", flush=True)


if __name__ == "__main__":
    main()
