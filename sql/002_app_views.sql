-- Indexes for the analysis app's page queries. The app reads only tables and views of 001,
-- so it works before this migration; these keep its pages fast on a large history.

-- Points and node stats filtered by a day range across all nodes (the primary keys lead
-- with client_id, which a range over days alone cannot use).
CREATE INDEX IF NOT EXISTS node_daily_points_day ON node_daily_points (day);
CREATE INDEX IF NOT EXISTS node_daily_stats_day ON node_daily_stats (day);

-- Incidents by detection time, and each incident's recovery steps in order.
CREATE INDEX IF NOT EXISTS incidents_detected_at ON incidents (detected_at);
CREATE INDEX IF NOT EXISTS recovery_actions_incident ON recovery_actions (incident_id, started_at);
