"""Real DICOM peers for tests and benchmarks.

- `netns`: loopback-only network namespaces (`NetworkNamespace`), entered per thread.
- `bridge`: `TcpBridge`, TCP forwarding between the host's loopback and a namespace's.
- `orthanc`: `OrthancPeer`, Orthanc + DICOMweb in its own namespace, bridged to 127.0.0.1.
- `dcmtk`: storescu/findscu/movescu/getscu/echoscu wrappers and the `Storescp` receiver.
- `fixtures`: the pytest fixtures `orthanc`, `dcmtk` and `storescp` (loaded by conftest).
"""
