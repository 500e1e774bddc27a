"""The ROS 2 side: message conversions, input synchronisation and the nodes built on them.

Importing it makes torch's OpenMP threads sleep while they wait for work (``OMP_WAIT_POLICY=PASSIVE``, unless the
environment says otherwise; it must be set before torch loads). A node shares its cores with its own threads,
DDS and the camera drivers: spinning threads took their time, and the DIG probe at 1280×960 took 224 ms instead of
33 ms per fused frame with the 2 cores busy (active waiting only pays on an otherwise idle machine).
"""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
