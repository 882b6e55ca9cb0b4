-- The trace of the request that placed the order (its server span's W3C
-- traceparent), NULL when it had none: the order's JSON names its trace
-- (trace_id, for the web page's link to it), and a re-drive's request
-- goes on in the same trace.
ALTER TABLE orders ADD COLUMN traceparent text;
