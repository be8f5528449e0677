"""Lesion annotation and scoring: site taxonomy, scoring schemes, reads.

Sites and schemes are data (``schemas/``); scoring is pure functions over
reads; a :class:`~cno_annotate.annotation.reads.ReadSession` owns an open read,
saves every change as it is made and keeps the undo history.
"""
