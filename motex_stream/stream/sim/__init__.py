"""A simulated beamline: a series whose motif changes (``series``), the Bluesky plan and
detector that emit it (``simulate``) and the figures drawn from a run (``plots``)."""
