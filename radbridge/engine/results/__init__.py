"""Results: one AI result per finished model run and linked order, handed on to the
channels that render it for the RIS, the EHR and the PACS."""
