"""DICOM-native results: reads as Comprehensive 3D SR (TID 1500) and lesion extents as SEG.

- :mod:`.codes`: the private coding scheme ``99CNO`` (``schemas/codes/``) and the standard codes used.
- :mod:`.stations`: the station series that holds a lesion, its headers and frame of reference.
- :mod:`.sr_export` / :mod:`.sr_import`: a read to a measurement report and back.
- :mod:`.seg_export`: lesion extents as BINARY segmentations, one per station series.

highdicom builds and reads every object, so what is written is valid once constructed.
"""
