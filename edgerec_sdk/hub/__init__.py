"""The reference hub (extra ``[hub]``): a WSGI app implementing protocol v1, storing in SQLite or PostgreSQL.

Never imported by the runtime. Example::

    from edgerec_sdk.hub import HubApp, serve_in_thread
    hub = serve_in_thread(HubApp("/var/lib/edgerec-hub", admin_tokens=["A"], edge_tokens=["E"]))
"""

from __future__ import annotations

from .app import HubApp, app_from_env
from .experiments import ExperimentGuard, experiment_report
from .server import RunningHub, ServerLimits, serve_forever, serve_in_thread

__all__ = ["ExperimentGuard", "HubApp", "RunningHub", "ServerLimits", "app_from_env", "experiment_report",
           "serve_forever", "serve_in_thread"]
