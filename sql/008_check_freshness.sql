-- Each check records the health period it ran under, so a reader (the CLI, the app) can tell a
-- current check from a stale one on its own clock: older than two periods is stale.

ALTER TABLE node_status_samples ADD COLUMN health_period_s real;

CREATE OR REPLACE VIEW v_fleet_status AS
SELECT h.id AS host_id, h.name AS host, h.provider, h.region, h.address, h.state,
       n.client_id, n.extension_version,
       s.status, s.sampled_at AS last_check, s.ip, s.taps_today, s.uptime_today,
       s.banned_reason, s.pss_kib,
       p.points AS today_points,
       s.reason, s.decision, h.quarantined_at, h.quarantine_reason,
       s.load1, s.mem_available_kib, s.mem_total_kib, s.disk_free_kib, s.disk_total_kib,
       s.runner_pss_kib, s.browser_pss_kib, s.clock_offset_s,
       s.health_period_s
FROM hosts h
LEFT JOIN nodes n ON n.host_id = h.id
LEFT JOIN LATERAL (
    SELECT * FROM node_status_samples s WHERE s.host_id = h.id ORDER BY sampled_at DESC LIMIT 1
) s ON true
LEFT JOIN LATERAL (
    SELECT points FROM node_daily_points p WHERE p.client_id = n.client_id ORDER BY day DESC LIMIT 1
) p ON true
WHERE h.state <> 'terminated';
