"""The ``probe`` command: ``measure`` here, ``replay``, ``merge`` and ``report`` from ``probe.replay.commands``.

Building the parser imports neither torch nor scipy (``probe --help`` answers at once);
each subcommand imports what it needs when it runs.
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
from collections.abc import Sequence

from probe._text import UNDEFINED
from probe.replay.commands import SUBCOMMANDS as _REPLAY_SUBCOMMANDS


def _add_measure(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "measure",
        help="print the per-layer table and network measures of a checkpoint or state dict",
        description="Measure one checkpoint (GenProb .pth.tar, Lightning .ckpt, .pt/.pth state dict, .safetensors).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=f"""output:
  one line per layer x unfolding (in/out) x variant (BE = raw weights, AE = after EVBMF):
  kept rank, S (normalised stable rank), C (condition number), ER (spectral entropy),
  spec (spectral norm), fro (Frobenius norm), SQ (stable quality); then the network
  measures E_L2, SQ_p, S_p, F_p (BE and AE). {UNDEFINED} marks an undefined value: an AE row
  where EVBMF kept nothing (kept 0), a network AE measure where EVBMF kept a component in
  fewer than half the unfoldings, or the measures of layers with NaN/Inf weights (a diverged
  run: measured as NaN, not refused); a footnote says which and why.

examples:
  probe measure SGD_NIN10001_lr0.08_wd0.0005_DIGITS10_epoch_4.pth.tar
  probe measure lightning_logs/version_0/checkpoints/epoch=9-step=160.ckpt --layers auto
  probe measure model.safetensors --method svd      # float64 svdvals for every matrix
  probe measure model.pt --alpha                    # + WeightWatcher's alpha, alphahat per layer
  probe measure model.pt --plot spectra.png         # + per-layer log-log ESD with the power-law tail
  probe measure llama/model.safetensors.index.json  # sharded: one tensor in memory at a time""",
    )
    p.add_argument("path", help="checkpoint or state-dict file (or a sharded safetensors checkpoint's index JSON)")
    p.add_argument("--layers", default=None, choices=["auto", "genprob"],
                   help="layer preset (default: genprob for GenProb files, auto otherwise)")
    p.add_argument("--method", default="auto", choices=["auto", "gram64", "svd"],
                   help="singular-value route (default auto: the cheapest accurate one per matrix; svd: float64 svdvals)")
    p.add_argument("--evbmf-xatol", type=float, default=None, metavar="TOL",
                   help="EVBMF: the reference's local search to this absolute tolerance on sigma^2 (default: the reference's "
                        "1e-5 for GenProb files, otherwise the exact global minimum)")
    p.add_argument("--unsafe-load", action="store_true",
                   help="allow arbitrary unpickling (only for files you trust)")
    p.add_argument("--alpha", action="store_true",
                   help="also print WeightWatcher's power-law fit per layer (alpha, alphahat, x_min, tail, KS; SPEC §10)")
    p.add_argument("--plot", default=None, metavar="OUT.png",
                   help="also write each layer's log-log ESD (λ = s²) with WeightWatcher's fitted power-law tail (needs matplotlib)")
    p.set_defaults(func=_run_measure)


def _run_measure(args: argparse.Namespace) -> int:
    from probe.replay.readers import load_checkpoint
    from probe.replay.runner import Options
    from probe.replay.sharded import measure_state

    checkpoint = load_checkpoint(args.path, unsafe=args.unsafe_load)
    # the settings `probe replay` measures this file with, so both print the same numbers
    layers, options = Options(layers=args.layers, method=args.method, evbmf_xatol=args.evbmf_xatol).for_file(
        checkpoint.layers, genprob=checkpoint.format == "genprob")
    report = measure_state(checkpoint.state_dict, layers=layers, options=options, progress=_progress_line)
    known = {k: v for k, v in checkpoint.performance.items() if v == v}  # drop NaN (unknown)
    epoch = f", epoch {checkpoint.epoch}" if checkpoint.epoch is not None else ""
    print(f"{checkpoint.path} ({checkpoint.format}{epoch}, layers={layers})")
    if known:
        print("  ".join(f"{k}={v:.4g}" for k, v in known.items()))
    print(report.format())
    if args.alpha:
        print("\nWeightWatcher's power-law fit of each unfolding's eigenvalues (λ = s²):")
        print(report.format_power_law())
    if args.plot:
        from probe.esd_plot import plot_spectra

        print(f"wrote {plot_spectra(report, args.plot, title=f'{checkpoint.path.name} ({checkpoint.format}{epoch})')}")
    return 0


_LARGE = 1 << 22  # elements: a layer this large gets a progress line (lazily read checkpoints)


def _progress_line(done: int, total: int, name: str, shape: tuple[int, ...], seconds: float, left: float) -> None:
    """One stderr line per large layer: which, how long it took, and the time left."""
    if math.prod(shape) >= _LARGE:
        print(f"[{done}/{total}] {name} {'x'.join(map(str, shape))}: {seconds:.1f}s, about {_duration(left)} left",
              file=sys.stderr, flush=True)


def _duration(seconds: float) -> str:
    return f"{seconds:.0f}s" if seconds < 90 else f"{seconds / 60:.0f} min" if seconds < 5400 else f"{seconds / 3600:.1f} h"


_SUBCOMMANDS = [_add_measure, *_REPLAY_SUBCOMMANDS]


def build_parser() -> argparse.ArgumentParser:
    """The ``probe`` argument parser; ``-v`` is accepted before or after the subcommand."""
    parser = argparse.ArgumentParser(prog="probe", description="Layer-wise generalization measures from network weights.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in _SUBCOMMANDS:
        add(sub)
    for subparser in sub.choices.values():  # SUPPRESS: an absent -v leaves the main parser's value
        subparser.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="log progress details")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``probe`` command; return its exit status (2 for a bad input, with a message on stderr;
    130 for Ctrl-C, with one line saying whether the run can be resumed)."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError, OSError) as error:
        print(f"probe: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"probe {args.command}: interrupted{_RESUMABLE.get(args.command, '')}", file=sys.stderr)
        return 130


_RESUMABLE = {
    "replay": "; the checkpoints measured so far are kept: run the same command again to resume",
    "merge": "; the sources are untouched: run the same command again",
}


if __name__ == "__main__":
    sys.exit(main())
