"""Reading images: DICOM indexing, slice stacks, composition, NIfTI."""
