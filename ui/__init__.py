"""The Qt (PySide6) front end of cno-annotate: the reading viewer.

It draws what the headless core computes (``cno_annotate.display``) and
sends every gesture back to it; imports run one way, ``ui`` -> ``cno_annotate``.
"""
