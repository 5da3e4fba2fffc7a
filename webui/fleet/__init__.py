"""The MSP's fleet server: appliances check in here; the operator sees the fleet and reports.

A Flask app of its own (``create_fleet_app``), separate from the appliance's admin UI: it
shares no users, sessions or state with it. Bundles are static files the MSP publishes
anywhere; this server only reads their version to show published vs applied.
"""
