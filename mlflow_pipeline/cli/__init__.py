"""The command line: the Hydra app and one function per subcommand; parse, call, print."""
