"""One module per `srtrain` command, each with a `main(argv) -> status`: its parser, the call into the package
that does the work, and what it prints. `srtrain.cli` only dispatches to them."""
