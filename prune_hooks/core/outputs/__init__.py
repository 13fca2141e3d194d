"""Files out: the run directory and subset (``rundir``), retraining schedules (``schedule``), the report,
cleaned annotations (``clean``) and UNSEEN's folds and merged runs (``unseen``); every write atomic.
"""
