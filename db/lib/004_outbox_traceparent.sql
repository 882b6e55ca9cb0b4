-- A message's trace (docs/architecture.md, "Traces"): the W3C traceparent
-- of the span that wrote the row, NULL when it was written outside any
-- trace. The relay's producer span is its child, and its own context
-- travels with the message as the Kafka header `traceparent`, so that the
-- consumer's span continues the trace across the broker.
ALTER TABLE outbox ADD COLUMN IF NOT EXISTS traceparent text;
