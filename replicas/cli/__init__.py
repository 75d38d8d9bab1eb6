"""The `tillmesh` command line: `main` builds the parser from one module per command
group (`run`, `tokens`, `inspect`, `ops`, `replay`, `compact`, `conflicts`, `report`,
`demo`), all of which use the helpers in `common`."""
