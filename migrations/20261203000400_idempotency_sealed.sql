-- Stored idempotent answers are sealed with the operator key ring from now on (security
-- review H5: the answers of key and webhook creation carry an API key or a signing secret).
-- Answers stored in clear before this migration that carry one are dropped: a repeat of such
-- a request within its 24 hours runs again instead of replaying a readable credential.
ALTER TABLE idempotency_key ADD COLUMN body_sealed boolean NOT NULL DEFAULT false;
DELETE FROM idempotency_key
 WHERE body IS NOT NULL
   AND (position('\x64686b5f'::bytea IN body) > 0      -- 'dhk_'
        OR position('\x77687365635f'::bytea IN body) > 0); -- 'whsec_'
