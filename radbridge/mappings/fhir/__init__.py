"""AI results as FHIR R4: one transaction Bundle per result, for the EHR.

`bundle.render_bundle` builds it (pure: the same result always gives the same bytes);
`transforms` registers it as the channel transformer `fhir.bundle`.
"""
