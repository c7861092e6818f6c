-- Custom header values are receiver credentials (the URL may not carry them): they are kept
-- sealed with the operator key ring, like signing secrets (security review M2).
--
-- `headers` keeps the names only, each with a null value, so views can list them without the
-- key; `headers_sealed` holds the sealed JSON object of names and values. SQL cannot seal (the
-- key is the service's), so rows written before this migration are sealed by the service when
-- it starts (`webhooks::seal_clear_headers`); until then they are read as they were.
ALTER TABLE endpoint ADD COLUMN headers_sealed bytea;
