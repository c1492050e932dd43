"""A simulated beamline for the Queue Server (``start-re-manager --startup-dir``).

ophyd's simulated detector and motor, and the stock plans the closed-loop agent may suggest.
The RE Manager makes its own RunEngine; nothing here touches hardware. A real beamline uses its
own profile collection instead of this folder.
"""

from bluesky.plans import count, scan  # noqa: F401
from ophyd.sim import det, motor  # noqa: F401
