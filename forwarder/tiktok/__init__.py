"""Everything TikTok-specific: its vocabulary and limits, the event model, the event builder,
the batches, the code table, the HTTP client and check --payload's lint.

The worker sees this package only through ``destination.TikTok``, a
``forwarder.destination.Destination``: a second platform would be a sibling package with its own.
A "§N" in this package is a section of docs/tiktok-events-api.md, and "S1" to "S20" its sources.
"""
