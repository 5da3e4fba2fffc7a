"""Remote policy sync (issue #8): signed bundles the MSP publishes and the agent that applies them.

The signing library (keys, canonical bytes, root and bundle metadata, publishing) is shared by
the MSP's commands and the appliance's agent, so both sides agree on one format.
"""
