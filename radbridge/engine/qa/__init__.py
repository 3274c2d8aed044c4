"""The QA store's writers: what the model said per finding of each done run
(`observations`), what the radiologist said in the final report (`reports`), and the
destination that reads final reports off a channel (`destination`, type `qa-reports`).

Both sides meet on (study_uid, finding_system, finding_code); whichever comes first
waits in its table for the other. The statistics are computed in SQL from these tables.
"""
