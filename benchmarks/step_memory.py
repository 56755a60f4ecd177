"""Device memory of a compiled training step by micro-batch passes: what `[train] microbatch_rows = 0` reads.

    .venv/bin/python benchmarks/step_memory.py [--width 256] [--context 512] [--rows 32] [--passes 1 2 4 8]

The timeline decoder's real step (scaling.training.step.step_functions: loss, AdamW, clipping) compiled for each
number of passes over the batch; its memory is XLA's own accounting of the compiled program
(scaling.training.step.step_bytes: inputs, outputs not written over them, temporaries), the same on every backend,
so a CPU gives the figure a GPU run will size its passes by. Also the step's time here, per pass count: what the
memory costs in speed.
"""

import argparse
import time

import jax.numpy as jnp
from common import machine
from device_check import decoder_step

from scaling.models.decoder import decoder_row_loss
from scaling.training.step import step_bytes, step_functions


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--context", type=int, default=512)
    parser.add_argument("--rows", type=int, default=32)
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--passes", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--steps", type=int, default=3)
    args = parser.parse_args()
    print(machine())
    made = decoder_step(args.width, args.context, args.rows, 374, "auto", args.dtype)
    params, opt, batch, constants, config = made.params, made.opt_state, made.batch, made.constants, made.config
    print(
        f"decoder width {args.width} ({config.n_layers} layers, {config.params():,} params), {args.rows} rows x "
        f"{args.context} tokens, {args.dtype}"
    )
    print("| passes | rows a pass | step memory | step time |")
    print("|---:|---:|---:|---:|")
    for passes in args.passes:
        compiled = (
            step_functions(decoder_row_loss, made.graphdef, made.recipe, jnp.dtype(args.dtype), passes)[1]
            .lower(params, opt, batch, constants)
            .compile()
        )
        compiled(params, opt, batch, constants)[2].block_until_ready()
        started = time.perf_counter()
        for _ in range(args.steps):
            loss = compiled(params, opt, batch, constants)[2]
        loss.block_until_ready()
        seconds = (time.perf_counter() - started) / args.steps
        print(
            f"| {passes} | {args.rows // passes} | {step_bytes(compiled) / 2**20:,.0f} MiB | {seconds * 1e3:,.0f} ms |",
            flush=True,
        )


if __name__ == "__main__":
    main()
