"""One module per extra CLI command, each with register(subparsers)."""
