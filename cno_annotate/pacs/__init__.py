"""PACS connectivity: query, retrieve into the store, send results back (DICOMweb and DIMSE).

Nodes and credentials: :mod:`.config`; protocol clients: :mod:`.dicomweb`, :mod:`.dimse`
(both :class:`.client.PacsClient`); retrieve into the store: :mod:`.retrieve`. Qt-free.
"""
