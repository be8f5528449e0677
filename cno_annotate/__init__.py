"""cno-annotate: the headless core.

Import, compose and score whole-body MRI of children with chronic non-bacterial
osteomyelitis. Nothing in this package imports Qt; the viewer lives in ``ui``.
"""

__version__ = "0.1.0"
