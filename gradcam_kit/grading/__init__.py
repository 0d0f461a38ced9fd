"""The grading engine: reading submissions, the sandboxed worker and its host, the batch (see docs/design.md)."""
