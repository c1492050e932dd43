"""The live analysis: one frame in, one result out.

``analyzer`` (the prepared model applied to each frame, its rebuilds), ``analyzer_protocol`` (what
the service asks of any analyzer, and the result it gets back), ``live_state`` (the analyzer's
state on disk), ``changes`` (persistent changes of the keep set), ``live_intervals`` (the
per-atom intervals) and ``liveview`` (the structure and best fit a frame is shown with).
"""
