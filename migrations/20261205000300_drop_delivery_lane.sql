-- Replaced by delivery_ready_lane (20261205000200).
DROP INDEX delivery_lane;
