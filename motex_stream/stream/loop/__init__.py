"""Closed loop: act on confirmed structure changes through the facility's Queue Server.

The agent (:mod:`.agent`) subscribes to the published contributions, follows a policy
(:mod:`.policy`, configuration only) and suggests plans to a bluesky-queueserver RE Manager
(:mod:`.queue`); every observation and decision is archived as a report run in Tiled
(:mod:`.report`). It never drives hardware: the Queue Server and its operator do.
"""
