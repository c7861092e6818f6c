-- A settle refused by the lease fence still describes a request that may have reached the
-- receiver (webhooks.md: every attempt is recorded). Such attempts are kept, marked `fenced`:
-- the delivery was claimed again meanwhile, so this outcome did not decide its fate
-- (security review L5).
ALTER TABLE delivery_attempt ADD COLUMN fenced boolean NOT NULL DEFAULT false;
