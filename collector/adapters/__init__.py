"""Source formats -> contract-shaped dicts, one module per format.

Adapters are pure: they read a source item (an OTLP span, a LiteLLM payload, a log line, a CSV
row, a CloudEvent, an OpenGateLLM usage row) and return the dict a `UsageRecord` is validated
from, a `Rejected` saying which source field made that impossible, or `None` when the item is
not a usage item at all (a non-GenAI span). Validation itself stays in one place: the record
contract, through `collector.ingest.validate_batch`.
"""
