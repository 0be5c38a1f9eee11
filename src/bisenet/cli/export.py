"""`bisenet export`: weights -> ONNX (logits or labels, checked with onnxruntime) or -> .safetensors."""

from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of `bisenet export`."""
    parser.add_argument("--weights", required=True, help="checkpoint, published state_dict or .safetensors file")
    parser.add_argument("--out", required=True, help="ONNX file to write (written atomically); a .safetensors name "
                        "writes eval-only weights instead (fp16 with --fp16)")
    parser.add_argument("--height", type=int, default=512, help="export/check height, a multiple of 32 (default 512)")
    parser.add_argument("--width", type=int, default=1024, help="export/check width, a multiple of 32 (default 1024)")
    parser.add_argument("--dynamic", action="store_true", help="dynamic batch, height and width")
    parser.add_argument("--argmax", action="store_true", help="output int32 labels N x H x W instead of logits")
    parser.add_argument("--opset", type=int, default=17, help="ONNX opset (13-20, default 17)")
    parser.add_argument("--fp16", action="store_true", help="half-precision weights and maths (float32 input/output)")
    parser.add_argument("--arch", default=None, help="override the architecture read from the weights")
    parser.add_argument("--num-classes", type=int, default=None, help="override the class count read from the weights")
    parser.add_argument("--config", default=None,
                        help="YAML config whose class names, palette and mean/std go into the metadata (default: the "
                             "checkpoint's, else the dataset preset with the weights' class count, as predict uses); "
                             "its model.arch and classes must match the weights")
    parser.add_argument("--no-simplify", action="store_true", help="skip graph simplification with onnxslim")
    parser.add_argument("--no-check", action="store_true", help="skip the onnxruntime comparison")


def run(args: argparse.Namespace) -> int:
    """Export and print what was checked; exit 1 (nothing written) when the export disagrees with PyTorch."""
    from bisenet.checkpoint import NonFiniteWeightsError
    from bisenet.deploy.export import ExportCheckError, export_model

    weights_only = args.out.endswith(".safetensors")
    try:
        report = export_model(args.weights, args.out, args.height, args.width, dynamic=args.dynamic, argmax=args.argmax,
                              opset=args.opset, fp16=args.fp16, arch=args.arch, num_classes=args.num_classes,
                              config=args.config or None, simplify=not args.no_simplify, check=not args.no_check)
    except NonFiniteWeightsError as exc:  # exit 1 as for a failed export check: nothing to export
        print(f"bisenet export: error: {args.out}: not exported: {exc}; nothing was written", file=sys.stderr)
        return 1
    except ExportCheckError as exc:
        # The measurements go to stdout as on success; the verdict is the one line on stderr.
        print(exc.report["whence"])
        _print_checks(exc.report["checks"], weights_only)
        print(f"bisenet export: error: {exc}", file=sys.stderr)
        return 1
    print(report["whence"])  # only now: the export's own checks may still refuse before this
    if report["replacing"]:
        print(f"replacing {args.out}")
    if weights_only:
        print(f"wrote {report['path']} ({report['size_mb']} MB, {report['arch']}, {'fp16' if args.fp16 else 'fp32'} "
              "weights, no aux heads)")
    else:
        shape = "N x 3 x H x W" if args.dynamic else f"1 x 3 x {args.height} x {args.width}"
        print(f"wrote {report['path']} ({report['size_mb']} MB, opset {args.opset}, input {shape}, "
              f"output {report['output']}{', fp16' if args.fp16 else ''}; "
              f"simplified: {report['simplified_with'] or _why_not_simplified(args.no_simplify)})")
    _print_checks(report.get("checks", []), weights_only)
    if not weights_only and not args.dynamic:  # the default size is Cityscapes': other images must be padded to it
        print(f"note: a static {args.height}x{args.width} graph: images of another size must be padded (or resized) "
              f"to {args.height}x{args.width}, which changes labels against `bisenet predict` (the global context "
              "sees the padding); pass --dynamic, or --height/--width of your images")
    return 0


def _print_checks(checks: list[dict], weights_only: bool) -> None:
    """One line per checked size: max |diff| and label agreement, or why it was skipped."""
    against = "the loaded weights" if weights_only else "PyTorch fp32"
    for check in checks:
        if "skipped" in check or "error" in check:
            print(f"  check {check.get('size', '')}: " + (f"skipped ({check['skipped']})" if "skipped" in check else check["error"]))
            continue
        diff = f"max |diff| {check['max_abs_diff']:.2e}, " if "max_abs_diff" in check else ""
        print(f"  check {check['size']} vs {against}: {diff}label agreement {check['agreement']:.5f}")


def _why_not_simplified(skipped: bool) -> str:
    """Why the graph was not simplified: the user's flag, a missing onnxslim, or onnxslim failing (it warned)."""
    import importlib.util

    if skipped:
        return "no (--no-simplify)"
    if importlib.util.find_spec("onnxslim") is None:
        return "no (pip install onnxslim)"
    return "no (onnxslim failed; see its warning)"
