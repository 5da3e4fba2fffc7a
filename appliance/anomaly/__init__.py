"""Anomaly scoring: flow and DNS records in, per-host scores and alerts out.

Inputs (``conntrack``, ``pcap``, ``flowfile``, ``querytail``) turn what they read into
``records.FlowRecord`` / ``records.DnsRecord``; ``engine.Scorer`` feeds them to the
detectors (one small module each) and turns their findings into alerts; ``actions`` records,
notifies and quarantines. Protocol logic does no I/O: the scorer is driven by event time.
"""
