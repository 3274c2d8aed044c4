"""Real peers for tests and benchmarks (DICOM, Triton, FHIR).

- `netns`: loopback-only network namespaces (`NetworkNamespace`), entered per thread.
- `bridge`: `TcpBridge`, TCP forwarding between the host's loopback and a namespace's.
- `orthanc`: `OrthancPeer`, Orthanc + DICOMweb in its own namespace, bridged to 127.0.0.1.
- `dcmtk`: storescu/findscu/movescu/getscu/echoscu wrappers and the `Storescp` receiver.
- `fhir_server`: Medplum's FHIR engine behind a Node HTTP wrapper (`fhir/`) on 127.0.0.1.
- `triton`: a real tritonserver (nvidia-pytriton's binary, Python backend) on 127.0.0.1.
- `fixtures`: the pytest fixtures `orthanc`, `dcmtk`, `storescp`, `triton_server` and
  `fhir_server`
  (loaded by conftest).
"""
