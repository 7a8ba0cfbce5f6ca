"""Development tooling: synthetic department data (``sample``), a whole federation
provisioned on one machine (``provision``) and the ``credit-node demo`` showcase
(``demo``), with their commands (``commands``).

Nothing a serving node runs imports this package; the tests and benchmarks use it.
"""

from __future__ import annotations

__all__: list[str] = []
