"""Everything TikTok-specific lives here: its vocabulary and limits, the event model, the event
builder, the batches, the code table, the HTTP client and check --payload's lint."""

# What the worker takes from this package, which a Destination protocol will name so that a
# second platform is a sibling subpackage: build.build(row, options, now) -> Built | Refused
# (Built.destination keys batches, holds and pauses); batching's Item.of, make_batches and
# Batch (body, row_ids, halves, subset, without) under the platform's count and byte caps; a
# client whose send(body) returns an outcome.ApiResponse or raises errors.TransportError; and
# classify(response, now) / classify_transport(error) -> outcome.Outcome.
