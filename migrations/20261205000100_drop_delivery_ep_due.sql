-- Replaced by delivery_ready (20261205000000).
DROP INDEX delivery_ep_due;
