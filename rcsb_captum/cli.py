r"""The ``rcsb-captum`` command line (uses the public API only)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable


def _train_bridge(args: argparse.Namespace) -> int:
    import torch

    from . import train_bridge
    from .bridge.presets import default_preset, preset_config
    from .bridge.training import load_images

    channels = 1 if args.grayscale else args.channels
    images = load_images(args.images, image_size=args.image_size, channels=channels)
    size, channels = images.shape[-1], images.shape[1]
    device_type = "cpu" if args.accelerator == "cpu" or not torch.cuda.is_available() else "cuda"
    preset = args.preset or default_preset(size, device_type)
    config = preset_config(
        preset,
        size,
        channels,
        num_channels=args.num_channels,
        channel_mult=args.channel_mult,
        num_res_blocks=args.num_res_blocks,
        attention_resolutions=args.attention_resolutions,
    )
    if os.environ.get("LOCAL_RANK", "0") == "0" and os.environ.get("NODE_RANK", "0") == "0":
        print(_training_plan(args, images, config, preset, device_type), flush=True)
    try:
        bridge = train_bridge(
            images,
            config=config,
            steps=args.steps,
            batch_size=args.batch_size,
            accumulate=args.accumulate,
            lr=args.lr,
            mask_area=(args.min_area, args.max_area),
            init=args.init,
            init_weights=args.init_weights,
            checkpoint_path=args.checkpoint,
            checkpoint_every=args.checkpoint_every,
            seed=args.seed,
            accelerator=args.accelerator,
            devices=args.devices,
            num_nodes=args.num_nodes,
            precision=args.precision,
        )
    except KeyboardInterrupt:
        if args.checkpoint:
            print(f"interrupted; saved {args.checkpoint} (rerun the command to resume)")
        raise
    bridge.save(args.out)
    print(f"wrote {args.out}")
    return 0


def _training_plan(
    args: argparse.Namespace, images, config: dict, preset: str, device_type: str
) -> str:
    import torch

    from .bridge import ADMUNet, adm_config_from_create_model
    from .bridge.checkpoints import read_checkpoint

    with torch.device("meta"):
        params = sum(
            p.numel() for p in ADMUNet(**adm_config_from_create_model(config)).parameters()
        )
    n, c, h, w = images.shape
    how = "the --preset" if args.preset else "chosen for the size and device"
    start = 0
    if args.checkpoint and os.path.exists(args.checkpoint):
        start = int(read_checkpoint(args.checkpoint).get("step", 0))
    devices = args.devices if isinstance(args.devices, int) else 1
    batch = args.batch_size * args.accumulate * devices * args.num_nodes
    resume = f"resuming {args.checkpoint} at step {start}" if start else "from scratch"
    return (
        f"train-bridge: {n} images of {c} channel(s), {h} x {w} px; network "
        f"{preset} ({how}), {config['num_channels']} base channels, {params / 1e6:.2f} M parameters; "
        f"{device_type}, global batch {batch}; steps {start} -> {args.steps} ({resume})"
    )


def _export(args: argparse.Namespace) -> int:
    import torch

    from .bridge.checkpoints import read_checkpoint
    from .bridge.training import bridge_from_checkpoint

    bridge = bridge_from_checkpoint(args.checkpoint)
    bridge.save(args.out, dtype=torch.float16 if args.half else None)
    step = read_checkpoint(args.checkpoint)["step"]
    print(f"wrote {args.out} (EMA weights after {step} steps)")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    paths = run_demo(
        n_images=args.n_images,
        counterfactual=args.counterfactual_class,
        region=args.region,
        seed=args.seed,
        out_dir=args.out_dir,
        preset=args.preset,
        **_config_overrides(args),
    )
    for kind, path in paths.items():
        print(f"{kind}: {path}")
    return 0


def _model(spec: str):
    r"""The classifier of ``--model`` and its class names: ``demo`` is the shipped
    Fashion-MNIST classifier with its ten names; else :func:`rcsb_captum.dataset_runs.load_model`."""
    from .dataset_runs import load_model

    if spec == "demo":
        from .demo import FASHION_MNIST_CLASSES, load_demo_classifier

        return load_demo_classifier(), list(FASHION_MNIST_CLASSES)
    return load_model(spec), None


def _explain(args: argparse.Namespace) -> int:
    import torch

    from . import MaskRegion
    from .bridge.training import load_images
    from .dataset_runs import RunSettings, half_dtype, load_bridge, parse_class_names
    from .dataset_runs.service import explain_images
    from .demo import DEMO_GRADCAM_LAYER

    model, names = _model(args.model)
    names = parse_class_names(args.class_names) or names
    config = _config(args)
    half = half_dtype(config.precision, "--half-bridge") if args.half_bridge else None
    bridge = load_bridge(args.bridge, args.bridge_config, half)  # explain-dataset's loader
    x = torch.cat(
        [
            load_images(p, image_size=bridge.image_size, channels=bridge.channels)
            for p in args.images
        ]
    )
    if args.region == "text" and not args.prompt:
        raise ValueError("--region text needs --prompt (what to change, e.g. 'the sleeves')")
    layer = args.gradcam_layer
    if layer is None and args.model == "demo" and args.region == "gradcam":
        layer = DEMO_GRADCAM_LAYER
    text = {"text_models": args.text_models} if args.text_models else {}
    settings = RunSettings(
        region=args.region,
        gradcam_layer=layer,
        prompt=args.prompt,
        **text,
        counterfactual_target=args.counterfactual_target,
        rcsb=config,
        batch_size=len(x),
        seed=args.seed,
    )
    region = None
    if args.mask:  # a fixed region: the region options above are not used
        mask = load_images(args.mask, image_size=bridge.image_size, channels=1)
        region = MaskRegion(mask > 0.5)
    summary = explain_images(
        model,
        bridge,
        x,
        args.out_dir,
        settings,
        labels=None if args.target is None else [args.target] * len(x),
        paths=[str(p) for p in args.images] if len(args.images) == len(x) else None,
        class_names=names,
        region=region,
        show_progress=True,
    )
    print(
        f"{summary['images']} images, flip rate {summary['flip_rate']:.3f}, "
        f"COUT {summary['cout']:.3f}; wrote {args.out_dir}/manifest.jsonl, summary.json, "
        "summary.md, examples.png"
    )
    return 0


def _explain_dataset(args: argparse.Namespace) -> int:
    from .dataset_runs import RunSettings, explain_dataset, parse_class_map, parse_class_names

    if args.model == "demo":
        model, names = _model(args.model)
    else:  # a file stays a path: its contents are the run's fingerprint
        model, names = args.model, None
    names = parse_class_names(args.class_names) or names

    text = {"text_models": args.text_models} if args.text_models else {}
    settings = RunSettings(
        region=args.region,
        gradcam_layer=args.gradcam_layer,
        prompt=args.prompt,
        **text,
        counterfactual_target=parse_class_map(args.counterfactual_target),
        rcsb=_config(args),
        batch_size=args.batch_size,
        seed=args.seed,
    )
    summary = explain_dataset(
        args.images,
        model,
        args.bridge,
        args.out_dir,
        settings,
        bridge_config=args.bridge_config,
        half_bridge=args.half_bridge,
        class_names=names,
        feature_extractor=args.feature_extractor,
        accelerator=args.accelerator,
        devices=args.devices,
        num_nodes=args.num_nodes,
        show_progress=not args.quiet,
        skip_unreadable=args.skip_unreadable,
    )
    if summary is not None:
        print(
            f"{summary['images']} images, flip rate {summary['flip_rate']:.3f}, "
            f"COUT {summary['cout']:.3f}; wrote {args.out_dir}/manifest.jsonl, summary.json, "
            "summary.md, examples.png"
        )
    return 0


def _devices(value: str) -> int | str:
    return value if value == "auto" else int(value)


# a user's mistake (bad file, bad option value) is reported in one line, not a traceback
_USER_ERRORS = (ValueError, TypeError, FileNotFoundError, FloatingPointError, OSError)


def _threads(args: argparse.Namespace) -> int:
    r"""Torch threads per process: ``--threads`` when given; else the machine's cores divided
    among the processes (``--devices N`` on CPU), so that the processes of one run never
    oversubscribe it. Deliberately not adapted to the machine's current load: a resumed run
    must use the thread count of the first one to repeat its results bit for bit (bits depend
    on the number of threads). On a machine shared with other jobs pass ``--threads 1``: on a
    loaded 2-core machine two threads ran the demo 3.7x slower than one."""
    if args.threads:
        return int(args.threads)
    cores = os.cpu_count() or 1
    devices = getattr(args, "devices", 1)
    on_cpu = getattr(args, "accelerator", "cpu") in ("cpu", "auto")
    if isinstance(devices, int) and devices > 1 and on_cpu:
        return max(1, cores // devices)
    return cores


def main(argv: list[str] | None = None) -> int:
    r"""Entry point of ``rcsb-captum``; returns the exit status (2 for a user error)."""
    parser = _parser()
    args = parser.parse_args(argv)
    import torch

    # the command's threads, restored afterwards: main() called in-process (tests, notebooks)
    # leaves the caller's thread settings as they were
    before, omp = torch.get_num_threads(), os.environ.get("OMP_NUM_THREADS")
    threads = _threads(args)
    torch.set_num_threads(threads)
    import logging

    export_log = logging.getLogger("torch.export")  # restored below, as the threads are
    log_level = export_log.level
    if not getattr(args, "verbose", False):
        # torch.export.load logs a traceback before it raises on a damaged file: the error is
        # reported in one line, the log shown with --verbose
        export_log.setLevel(logging.ERROR)
    os.environ["OMP_NUM_THREADS"] = str(threads)  # processes Fabric starts inherit it
    from ._utils import flush_denormal
    from .durable import RunStopped

    try:
        # denormals make CPU steps several times slower; the caller's setting comes back after
        with flush_denormal():
            return args.func(args)
    except RunStopped as e:  # SIGTERM (or Slurm's SIGUSR1) between batches: what is done is kept
        print(
            f"rcsb-captum {args.command}: {e}; finished images are kept, rerun the same "
            "command to resume",
            file=sys.stderr,
        )
        return 128 + e.signum
    except _USER_ERRORS as e:
        if getattr(args, "verbose", False):
            import traceback

            traceback.print_exc()
        print(f"rcsb-captum {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"rcsb-captum {args.command}: interrupted", file=sys.stderr)
        return 130
    finally:
        export_log.setLevel(log_level)
        torch.set_num_threads(before)
        if omp is None:
            os.environ.pop("OMP_NUM_THREADS", None)
        else:
            os.environ["OMP_NUM_THREADS"] = omp


def _add_rcsb_options(p: argparse.ArgumentParser, region_names: tuple[str, ...]) -> None:
    # the region, configuration and bridge options that `explain` and `explain-dataset` share
    p.add_argument(
        "--region",
        choices=region_names,
        default="ig",
        help="region source (explain: used when no --mask is given)",
    )
    p.add_argument("--gradcam-layer", default=None, help="dotted module name for --region gradcam")
    p.add_argument(
        "--prompt",
        default=None,
        help="what --region text selects, e.g. 'the sleeves' (GroundingDINO + SAM; "
        "pip install 'rcsb-captum[text]')",
    )
    p.add_argument(
        "--text-models",
        default=None,
        help="--region text: 'DETECTOR,SAM' hub ids or local folders (default: "
        "IDEA-Research/grounding-dino-tiny,facebook/sam-vit-base)",
    )
    _add_config_options(p, "paper")
    p.add_argument("--seed", type=int, default=0, help="seed of every random draw")
    p.add_argument(
        "--half-bridge",
        action="store_true",
        help="hold the bridge's weights in the --precision dtype (bf16/fp16): half their memory",
    )


def _add_config_options(p: argparse.ArgumentParser, preset: str) -> None:
    # --preset and one flag per RCSBConfig field, generated (its help and choices come from
    # the field): every command that runs RCSB takes the same flags
    import typing

    from .config import PRESETS, RCSBConfig, choices_of, config_fields, parse_text

    p.add_argument(
        "--preset",
        choices=tuple(PRESETS),
        default=preset,
        help=f"named setting the options below start from (default: {preset})",
    )
    hints = typing.get_type_hints(RCSBConfig)
    for f in config_fields():
        flag = "--" + f.name.replace("_", "-")
        kind = hints[f.name]
        help_text = f"{f.metadata['help']} (default: {f.default}, or the preset's)"
        if kind is bool:
            p.add_argument(
                flag, action=argparse.BooleanOptionalAction, default=None, help=help_text
            )
        elif choices_of(kind) is not None:
            p.add_argument(flag, choices=choices_of(kind), default=None, help=help_text)
        else:
            p.add_argument(
                flag, type=_argparse_type(parse_text(kind)), default=None, help=help_text
            )


def _argparse_type(parse: Callable[[str], object]) -> Callable[[str], object]:
    # argparse shows an ArgumentTypeError's own message (a ValueError only as "invalid value")
    def typed(text: str) -> object:
        try:
            return parse(text)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    return typed


def _config_overrides(args: argparse.Namespace) -> dict:
    r"""The RCSBConfig fields given on the command line."""
    from .config import config_fields

    return {
        f.name: getattr(args, f.name)
        for f in config_fields()
        if getattr(args, f.name, None) is not None
    }


def _config(args: argparse.Namespace):
    r"""The RCSBConfig the command line asks for: the preset, then every flag given."""
    from .config import RCSBConfig

    return RCSBConfig.preset(args.preset, **_config_overrides(args))


class _HelpFormatter(argparse.HelpFormatter):
    r"""Appends ``(default: X)`` to every option with a real default that its help does not
    state already (``None`` and ``False`` defaults mean "not given")."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if (
            action.option_strings
            and action.default is not None
            and action.default is not False
            and action.default != argparse.SUPPRESS
            and "default" not in text
        ):
            text += " (default: %(default)s)"
        return text


_MODEL_HELP = (
    "classifier taking images in [0, 1]: 'demo' (the shipped Fashion-MNIST classifier), a "
    "torch.export file (.pt2, best with a dynamic batch dimension), a TorchScript file, or "
    "package.module:factory (a function returning the model); see docs/your_model.md"
)
_BRIDGE_HELP = "'fashion-mnist' (shipped), a Bridge.save file or an official I2SB/RCSB latest.pt"
_BRIDGE_CONFIG_HELP = (
    "configuration of an official latest.pt: imagenet-256 (default), celebahq-256, celeba-128, "
    "or a JSON file of create_model kwargs"
)
_CLASS_NAMES_HELP = (
    "the classifier's class names in order: a file with one per line or a comma list "
    "(default: the demo's names, or the class sub-folders' names)"
)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rcsb-captum", description="Region-constrained counterfactuals"
    )
    sub = parser.add_subparsers(dest="command", required=True)

    def add_parser(name: str, **kw):  # every sub-command shows its defaults
        return sub.add_parser(name, formatter_class=_HelpFormatter, **kw)

    from .demo import REGION_SOURCES
    from .regions import REGION_NAMES

    demo = add_parser(
        "demo", help="explain shipped Fashion-MNIST images with the shipped models (CPU, < 1 min)"
    )
    demo.add_argument(
        "--n-images", type=int, default=6, help="how many shipped sample images to explain (1-60)"
    )
    demo.add_argument(
        "--counterfactual-class",
        default="pair",
        help="'pair' (shirt<->T-shirt/top, pullover<->coat, sneaker<->ankle boot), 'any', "
        "or a class name/index",
    )
    demo.add_argument(
        "--region",
        choices=REGION_SOURCES,
        default="ig",
        help="region source: IG + NoiseTunnel, Saliency, GradCAM, Occlusion or random cells",
    )
    demo.add_argument(
        "--seed", type=int, default=0, help="seed of every random draw (regions included)"
    )
    demo.add_argument(
        "--out-dir",
        default="rcsb_demo",
        help="folder for examples.png, summary.md, manifest.jsonl and per-image files",
    )
    _add_config_options(demo, "realistic")
    demo.set_defaults(func=_demo)
    ex = add_parser("explain", help="counterfactuals for your images and classifier")
    ex.add_argument("images", nargs="+", help="image files or folders")
    ex.add_argument("--model", default="demo", help=_MODEL_HELP)
    ex.add_argument("--bridge", default="fashion-mnist", help=_BRIDGE_HELP)
    ex.add_argument("--bridge-config", default=None, help=_BRIDGE_CONFIG_HELP)
    ex.add_argument("--class-names", default=None, help=_CLASS_NAMES_HELP)
    ex.add_argument("--target", type=int, default=None, help="class explained (default: predicted)")
    ex.add_argument(
        "--counterfactual-target",
        type=int,
        default=None,
        help="class to reach (default: any class but the target)",
    )
    _add_rcsb_options(ex, REGION_NAMES)
    ex.add_argument("--mask", default=None, help="an image whose bright pixels may change")
    ex.add_argument(
        "--out-dir",
        default="rcsb_explain",
        help="folder for examples.png, summary.md, manifest.jsonl and per-image files",
    )
    ex.set_defaults(func=_explain)
    ds = add_parser(
        "explain-dataset",
        help="counterfactuals for a whole folder on one or many devices (Lightning Fabric), "
        "resumable",
    )
    ds.add_argument(
        "images", help="a folder (flat or one sub-folder per class) or a list file of paths"
    )
    ds.add_argument("--model", default="demo", help=_MODEL_HELP)
    ds.add_argument("--bridge", default="fashion-mnist", help=_BRIDGE_HELP)
    ds.add_argument("--bridge-config", default=None, help=_BRIDGE_CONFIG_HELP)
    ds.add_argument("--class-names", default=None, help=_CLASS_NAMES_HELP)
    ds.add_argument("--out-dir", required=True, help="output folder; rerun to resume")
    ds.add_argument(
        "--counterfactual-target",
        default=None,
        help="class to reach: an index, a map 'a:b,c:d' or a JSON file of one (default: any)",
    )
    _add_rcsb_options(ds, REGION_NAMES)
    ds.add_argument("--batch-size", type=int, default=8, help="images sampled together")
    ds.add_argument(
        "--feature-extractor",
        default=None,
        help="package.module:factory of an images -> features network for FID / sFID",
    )
    ds.add_argument(
        "--accelerator", default="auto", help="Lightning Fabric accelerator: cpu, cuda, auto"
    )
    ds.add_argument(
        "--devices", type=_devices, default=1, help="devices (processes) per node, or 'auto'"
    )
    ds.add_argument("--num-nodes", type=int, default=1, help="nodes")
    ds.add_argument("--quiet", action="store_true", help="no progress bar")
    ds.add_argument(
        "--skip-unreadable",
        action="store_true",
        help="explain the readable images and list the unreadable ones in summary.json/.md "
        "(default: refuse, naming every unreadable file)",
    )
    ds.set_defaults(func=_explain_dataset)
    tb = add_parser("train-bridge", help="train an I2SB inpainting bridge on a folder of images")
    tb.add_argument("images", help="folder of image files")
    tb.add_argument(
        "--preset",
        choices=("tiny", "small", "celeba-128", "imagenet-256"),
        default=None,
        help="network size (default: fits the image size and the device; see docs/training.md)",
    )
    tb.add_argument("--num-channels", type=int, default=None, help="base width (overrides preset)")
    tb.add_argument(
        "--channel-mult", default=None, help="width multipliers per level, e.g. '1,2,2'"
    )
    tb.add_argument("--num-res-blocks", type=int, default=None, help="residual blocks per level")
    tb.add_argument(
        "--attention-resolutions",
        default=None,
        help="resolutions with self-attention, e.g. '32,16,8'",
    )
    tb.add_argument(
        "--channels",
        type=int,
        choices=(1, 3),
        default=None,
        help="read images as 1 or 3 channels (default: the data's own)",
    )
    tb.add_argument(
        "--accumulate", type=int, default=1, help="micro-batches per step (gradient accumulation)"
    )
    tb.add_argument("--init", default=None, help="fine-tune from an I2SB latest.pt or bridge file")
    tb.add_argument(
        "--init-weights",
        choices=("ema", "net"),
        default="ema",
        help="which weights of an official --init checkpoint",
    )
    tb.add_argument(
        "--accelerator", default="cpu", help="Lightning Fabric accelerator: cpu, cuda, auto"
    )
    tb.add_argument("--devices", type=_devices, default=1, help="devices (processes) per node")
    tb.add_argument("--num-nodes", type=int, default=1, help="nodes")
    tb.add_argument(
        "--precision",
        default="32-true",
        help="Fabric precision: 32-true, bf16-mixed, 16-mixed",
    )
    tb.add_argument("--out", default="bridge.pt", help="bridge file to write (Bridge.save format)")
    tb.add_argument(
        "--image-size", type=int, default=None, help="resize the images to this square side"
    )
    tb.add_argument("--grayscale", action="store_true", help="same as --channels 1")
    tb.add_argument("--steps", type=int, default=20_000, help="total optimisation steps")
    tb.add_argument("--batch-size", type=int, default=32, help="images per micro-batch and device")
    tb.add_argument("--lr", type=float, default=5e-4, help="AdamW learning rate")
    tb.add_argument(
        "--min-area",
        type=float,
        default=0.1,
        help="smallest hole fraction of the random training masks",
    )
    tb.add_argument(
        "--max-area",
        type=float,
        default=0.4,
        help="largest hole fraction of the random training masks",
    )
    tb.add_argument("--checkpoint", default=None, help="resumable training checkpoint file")
    tb.add_argument("--checkpoint-every", type=int, default=500, help="steps between checkpoints")
    tb.add_argument("--seed", type=int, default=0, help="seed of all training randomness")
    tb.set_defaults(func=_train_bridge)
    ex_ = add_parser("export", help="write a bridge file from a train-bridge checkpoint")
    for p in (demo, ex, ds, tb, ex_):
        p.add_argument(
            "--threads",
            type=int,
            default=0,
            help="torch threads per process (0: the cores, divided among --devices processes on "
            "CPU); on a machine shared with other jobs use 1: on a loaded 2-core machine 1 "
            "thread ran the demo 3.7x faster than 2",
        )
        p.add_argument(
            "--verbose",
            action="store_true",
            help="show torch's own warnings and the traceback of an error (default: one line)",
        )
    ex_.add_argument("checkpoint", help="a train-bridge --checkpoint file")
    ex_.add_argument("out", help="bridge file to write")
    ex_.add_argument("--half", action="store_true", help="store float16 weights (half the size)")
    ex_.set_defaults(func=_export)
    return parser


if __name__ == "__main__":
    sys.exit(main())
