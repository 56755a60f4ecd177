"""Where the command line writes: tables and results to stdout, progress and errors to stderr."""

import sys

import typer
from rich.console import Console
from rich.markup import escape

console = Console(stderr=True)
# Tables go to stdout; wide enough not to truncate names when stdout is a file or a pipe.
out_console = Console(width=None if sys.stdout.isatty() else 160)


class UserError(typer.Exit):
    """Print a one-line error for a user's mistake and exit 2 (no traceback)."""

    def __init__(self, message: str):
        # escape: a message naming a spec's [table] must show it, not be read as markup
        console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
        super().__init__(code=2)
