"""What crosses the boundary between the grader (host) and the sandboxed worker.

Both sides import this package, and nothing else of each other's:

:mod:`gradcam_kit.wire.frames`
    Length-prefixed frames of plain data (JSON and ``.npy`` arrays), and the values that cross
    (``ModelSpec``, ``LayerRef``).
:mod:`gradcam_kit.wire.limits`
    ``Limits``: the worker's resource limits, and the words both sides use for them.
:mod:`gradcam_kit.wire.failures`
    ``Failure`` (the kinds of failure) and ``StudentError`` (an error located in the notebook).
:mod:`gradcam_kit.wire.messages`
    The typed messages carried in the frames: the ``start`` message, the requests, the answers.
"""
