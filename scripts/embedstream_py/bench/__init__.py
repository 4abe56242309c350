"""The benchmarks (convert, serve, upload, startup) and their helpers: each
measures embedstream against a named peer in the same run; BENCHMARKS.md
holds the figures and the exact commands."""
