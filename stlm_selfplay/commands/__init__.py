"""Subcommands of `stlm`: one module each, with `add_arguments(parser)` and `run(args)`."""
