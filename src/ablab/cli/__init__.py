"""The ablab command: one module per command group; each parses, calls one library function, prints.
Nothing imports the CLI."""
