"""The command line: every subcommand's parser and its error-to-exit-code mapping."""
