"""tradeloom's version, on its own: `tradeloom --version` and every client command read it
without loading the engine (pyproject.toml's `version` is the same string; a test checks)."""

VERSION = "0.1.0"
