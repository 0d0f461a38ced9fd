"""What crosses the boundary between the grader (host) and the sandboxed worker.

Both sides import this package, and nothing else of each other's:

:mod:`gradcam_kit.wire.frames`
    Length-prefixed frames of plain data (JSON and ``.npy`` arrays), and the values that cross
    (``ModelSpec``, ``LayerRef``).
:mod:`gradcam_kit.wire.messages`
    The typed messages carried in those frames: the ``start`` message with its ``Limits``, the
    requests, the answers, the kinds of failure (``Failure``) and the student's errors, located
    (``StudentError``).
"""
