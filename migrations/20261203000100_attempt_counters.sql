-- Attempt counters outgrow smallint (security review H1): a row past 32,767 attempts made
-- every claim statement fail for every tenant. `integer` with a cap in the code
-- (queue::deliveries::MAX_ATTEMPTS) keeps one delivery from ever reaching a type's limit.
ALTER TABLE delivery ALTER COLUMN attempt TYPE integer, ALTER COLUMN attempt_base TYPE integer;
ALTER TABLE delivery_finished ALTER COLUMN attempts TYPE integer;
ALTER TABLE delivery_attempt ALTER COLUMN attempt TYPE integer;
