-- Which dispatcher holds an in-flight row (issue 11, "in-flight caps that measure
-- concurrency"). An endpoint whose in-flight rows all belong to one dispatcher may be leased
-- ahead by that dispatcher (up to `claim::LEASE_AHEAD` × `max_in_flight`), which sends at most
-- `max_in_flight` at once and starts the next the moment a response is read; as soon as a
-- second dispatcher holds one of its rows the cap is counted strictly again. NULL (rows
-- claimed by an older release) counts as another dispatcher's. Nullable with no default:
-- adding it rewrites nothing.
ALTER TABLE delivery ADD COLUMN leased_by bigint;
